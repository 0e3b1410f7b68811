"""Turn a Keras ``Sequential`` GRU(+Dense(1)) model into a bundle."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from edge_gru.bundle import Bundle, GRUWeights, Manifest, Normalization, write_bundle
from edge_gru.errors import BundleError
from edge_gru.train import tfruntime


def gru_weights_from_keras(model: Any) -> tuple[GRUWeights, dict[str, Any]]:
    """Extract GRU + Dense(1) weights from a Keras model; refuse anything else by name.

    Returns the weights and the architecture facts read off the model (window, stateful).
    """
    keras = tfruntime.keras()

    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    if not isinstance(model, keras.Sequential):
        raise BundleError(f"model {model.name!r} is a {type(model).__name__}; only keras.Sequential is supported")
    kinds = [type(layer).__name__ for layer in layers]
    if len(layers) != 2 or not isinstance(layers[0], keras.layers.GRU) or not isinstance(layers[1], keras.layers.Dense):
        raise BundleError(
            f"model {model.name!r} has layers {kinds}; supported is exactly [GRU, Dense(1)]"
            + (
                f" (layer {layers[0].name!r} is not a GRU)"
                if layers and not isinstance(layers[0], keras.layers.GRU)
                else ""
            )
        )
    gru, dense = layers
    cfg = gru.get_config()
    problems = []
    if cfg.get("activation") != "tanh":
        problems.append(f"activation={cfg.get('activation')!r} (needs 'tanh')")
    if cfg.get("recurrent_activation") != "sigmoid":
        problems.append(f"recurrent_activation={cfg.get('recurrent_activation')!r} (needs 'sigmoid')")
    if cfg.get("return_sequences"):
        problems.append("return_sequences=True (needs False)")
    if cfg.get("go_backwards"):
        problems.append("go_backwards=True")
    if cfg.get("return_state"):
        problems.append("return_state=True")
    if problems:
        raise BundleError(f"GRU layer {gru.name!r} has unsupported options: {', '.join(problems)}")
    dcfg = dense.get_config()
    if dcfg.get("units") != 1 or dcfg.get("activation") not in ("linear", None):
        raise BundleError(
            f"Dense layer {dense.name!r} must be Dense(1) with linear activation "
            f"(has units={dcfg.get('units')}, activation={dcfg.get('activation')!r})"
        )
    units = int(cfg["units"])
    gw = [np.asarray(w, dtype=np.float32) for w in gru.get_weights()]
    reset_after = bool(cfg.get("reset_after", True))
    kernel, recurrent = gw[0], gw[1]
    if cfg.get("use_bias", True):
        bias = gw[2]
    else:
        bias = np.zeros((2, 3 * units) if reset_after else (3 * units,), dtype=np.float32)
    dw = [np.asarray(w, dtype=np.float32) for w in dense.get_weights()]
    dense_bias = dw[1] if len(dw) > 1 else np.zeros(1, dtype=np.float32)
    weights = GRUWeights(
        kernel, recurrent, bias.reshape((2, 3 * units) if reset_after else (3 * units,)), dw[0], dense_bias
    )
    weights.validate(where=f"keras model {model.name!r}")
    shape = model.inputs[0].shape if getattr(model, "inputs", None) else (None, None, kernel.shape[0])
    return weights, {"window": shape[1], "stateful": bool(cfg.get("stateful", False))}


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
    """Write a bundle for a Keras GRU(+Dense(1)) model (object or ``.keras`` path)."""
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
    weights, facts = gru_weights_from_keras(model)
    n_in = weights.input_features
    window = window or facts["window"] or 10
    mode = mode or ("stateful" if facts["stateful"] else "window")
    features = features or (("value",) if n_in == 1 else tuple(f"x{i}" for i in range(n_in)))
    manifest = Manifest(
        units=weights.units,
        input_features=n_in,
        window=int(window),
        reset_after=weights.reset_after,
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
