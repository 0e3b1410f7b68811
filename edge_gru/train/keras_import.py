"""Turn a Keras GRU forecaster (``Sequential`` or a functional chain) into a bundle.

Supported: one input, then GRU layers (each but the last with ``return_sequences=True``),
then Dense layers ending in ``Dense(k)`` (k = the forecast horizon), with Dropout anywhere
in between (an inference no-op, dropped). Anything the kernels cannot reproduce exactly is
refused before a file is written, naming the layer and saying what is supported.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from edge_gru.bundle import Bundle, Manifest, Normalization, write_bundle
from edge_gru.errors import BundleError
from edge_gru.layers import ACTIVATIONS, NetworkWeights
from edge_gru.train import networks, tfruntime

SUPPORTED = (
    "supported is a chain: GRU layers (activation 'tanh', recurrent_activation 'sigmoid', "
    "return_sequences=True on all but the last), optional Dropout, then Dense layers "
    f"(activation {', '.join(ACTIVATIONS)}) ending in Dense(k), k = the horizon"
)


def _named(layer: Any) -> str:
    return f"layer {layer.name!r} ({type(layer).__name__})"


def _chain(model: Any) -> list[Any]:
    """The model's layers input to output, refusing anything that is not a single unbranched chain."""
    keras = tfruntime.keras()
    if isinstance(model, keras.Sequential):
        return [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    if type(model).__name__ != "Functional":
        raise BundleError(
            f"model {model.name!r} is a {type(model).__name__} (a subclassed model); "
            "supported are keras.Sequential and functional-API models"
        )
    inputs, outputs = list(model.inputs or []), list(model.outputs or [])
    if len(inputs) != 1 or len(outputs) != 1:
        raise BundleError(
            f"model {model.name!r} has {len(inputs)} inputs and {len(outputs)} outputs; "
            f"supported is one of each ({SUPPORTED})"
        )
    chain: list[Any] = []
    tensor = outputs[0]
    while True:
        layer = tensor._keras_history[0]
        if isinstance(layer, keras.layers.InputLayer):
            break
        if not isinstance(layer, keras.layers.Layer):
            raise BundleError(
                f"model {model.name!r} applies the operation {layer.name!r} ({type(layer).__name__}); {SUPPORTED}"
            )
        nodes = layer._inbound_nodes
        incoming = list(nodes[0].input_tensors) if len(nodes) == 1 else []
        if len(nodes) != 1 or len(incoming) != 1:
            raise BundleError(
                f"{_named(layer)} takes {len(incoming) or len(nodes)} inputs "
                f"(a branching or shared-layer graph); {SUPPORTED}"
            )
        chain.append(layer)
        tensor = incoming[0]
    chain.reverse()
    on_path = {id(layer) for layer in chain}
    for layer in model.layers:
        if not isinstance(layer, keras.layers.InputLayer) and id(layer) not in on_path:
            raise BundleError(f"{_named(layer)} is off the input-to-output chain (a branching graph); {SUPPORTED}")
    return chain


def _check_gru(layer: Any, last: bool) -> None:
    cfg = layer.get_config()
    problems = []
    if cfg.get("activation") != "tanh":
        problems.append(f"activation={cfg.get('activation')!r} (needs 'tanh')")
    if cfg.get("recurrent_activation") != "sigmoid":
        problems.append(f"recurrent_activation={cfg.get('recurrent_activation')!r} (needs 'sigmoid')")
    if last and cfg.get("return_sequences"):
        problems.append("return_sequences=True on the last GRU (needs False: the dense head reads the last step)")
    if not last and not cfg.get("return_sequences"):
        problems.append("return_sequences=False before another GRU (needs True)")
    if cfg.get("go_backwards"):
        problems.append("go_backwards=True")
    if cfg.get("return_state"):
        problems.append("return_state=True")
    if problems:
        raise BundleError(f"GRU {_named(layer)} has unsupported options: {', '.join(problems)}; {SUPPORTED}")


def weights_from_keras(model: Any) -> tuple[NetworkWeights, dict[str, Any]]:
    """The network and weights of a Keras model; refuse anything else by layer name.

    Returns the weights and the facts read off the model (window, stateful).
    """
    keras = tfruntime.keras()
    chain = _chain(model)
    kept: list[Any] = []
    grus = [layer for layer in chain if isinstance(layer, keras.layers.GRU)]
    stateful = False
    for layer in chain:
        if isinstance(layer, keras.layers.Dropout):
            continue  # identity at inference
        if isinstance(layer, keras.layers.GRU):
            if kept and isinstance(kept[-1], keras.layers.Dense):
                raise BundleError(f"GRU {_named(layer)} follows a Dense layer; {SUPPORTED}")
            _check_gru(layer, layer is grus[-1])
            stateful = stateful or bool(layer.get_config().get("stateful"))
        elif isinstance(layer, keras.layers.Dense):
            if not kept:
                raise BundleError(f"Dense {_named(layer)} comes before any GRU; {SUPPORTED}")
            activation = layer.get_config().get("activation") or "linear"
            if activation not in ACTIVATIONS:
                raise BundleError(f"Dense {_named(layer)} has activation {activation!r}; {SUPPORTED}")
        else:
            raise BundleError(f"{_named(layer)} is not supported; {SUPPORTED}")
        kept.append(layer)
    if not grus:
        raise BundleError(f"model {model.name!r} has no GRU layer; {SUPPORTED}")
    if not isinstance(kept[-1], keras.layers.Dense):
        raise BundleError(f"model {model.name!r} ends in {_named(kept[-1])}, not a Dense layer; {SUPPORTED}")
    try:
        weights = networks.weights_from_layers(kept, where=f"keras model {model.name!r}")
    except ValueError as exc:
        raise BundleError(str(exc)) from exc
    shape = model.inputs[0].shape if getattr(model, "inputs", None) else (None, None)
    return weights, {"window": shape[1], "stateful": stateful}


def import_keras(
    model_or_path: Any,
    out: str | os.PathLike[str],
    *,
    window: int | None = None,
    mode: str | None = None,
    normalization: Normalization | None = None,
    features: tuple[str, ...] | None = None,
    target: str | None = None,
    sample_period_s: float | None = None,
    name: str | None = None,
    training: dict[str, Any] | None = None,
    extra_files: dict[str, bytes] | None = None,
    warmup: int | None = None,
) -> Bundle:
    """Write a bundle for a Keras GRU forecaster (model object or ``.keras`` path)."""
    if isinstance(model_or_path, str | os.PathLike):
        keras = tfruntime.keras()

        path = Path(model_or_path)
        if not path.is_file():
            raise BundleError(f"{path}: no such Keras model file")
        try:
            model = keras.saving.load_model(path, compile=False)
        except Exception as exc:
            raise BundleError(f"{path}: Keras cannot load this model ({exc})") from exc
        default_name = path.stem
    else:
        model = model_or_path
        default_name = model.name
    weights, facts = weights_from_keras(model)
    n_in = weights.network.input_features
    window = window or facts["window"] or 10
    mode = mode or ("stateful" if facts["stateful"] else "window")
    features = features or (("value",) if n_in == 1 else tuple(f"x{i}" for i in range(n_in)))
    manifest = Manifest(
        network=weights.network,
        window=int(window),
        mode=mode,
        features=features,
        target=target or features[0],
        normalization=normalization or Normalization(kind="fixed", input_mean=(0.0,) * n_in, input_std=(1.0,) * n_in),
        sample_period_s=sample_period_s,
        warmup=warmup if warmup is not None else (int(window) if mode == "window" else 1),
        name=name or default_name,
        training=training or {"source": "keras import"},
    )
    return write_bundle(out, manifest, weights, extra_files)
