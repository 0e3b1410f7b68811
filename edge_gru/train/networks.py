"""The one home of Keras networks: a :class:`~edge_gru.layers.Network` built in Keras, and back.

Every Keras model edge-gru makes comes from here, so training, the ``keras`` reference
backend, the benchmarks and the tests run the same layer list the same way:

* :func:`window_model` — Input (W, I), the GRU stack (all but the last returning sequences),
  the dense layers; what the window-mode trainer fits and what Keras ``predict`` runs.
* :func:`sequence_model` — every GRU returns sequences, from explicit initial states and
  under a mask, returning the outputs of every step and the final states: what truncated
  back-propagation with carried state needs (masked steps keep the state unchanged, so
  padding never disturbs it).
* :func:`stateful_model` — the same with Keras ``stateful=True`` and a fixed batch shape.
* :func:`step_model` — one step with the state outside: inputs ``x_t`` (B, I) and ``h_prev``
  (B, state_size), outputs ``y`` (B, horizon) and ``h_t`` (B, state_size), the layers'
  states side by side as the pool keeps them.
* :func:`weights_of` / :func:`load_weights_into` — :class:`~edge_gru.layers.NetworkWeights`
  out of and into such models (Dropout and input layers carry no weights and are skipped).

``cell="lstm"`` builds the same stack with LSTM layers: the training baseline, never exported.
Dropout (``dropout > 0``) sits between layers, so it is a training-time regulariser only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from edge_gru.layers import DenseLayer, GRULayer, Layer, Network, NetworkWeights
from edge_gru.train import tfruntime

CELLS = ("gru", "lstm")


def _check_cell(cell: str) -> None:
    if cell not in CELLS:
        raise ValueError(f"cell must be 'gru' or 'lstm', not {cell!r}")


def state_units(network: Network, cell: str = "gru") -> list[int]:
    """Widths of the explicit state tensors of :func:`sequence_model`, in order (LSTM: h and c per layer)."""
    _check_cell(cell)
    per = 2 if cell == "lstm" else 1
    return [layer.units for layer in network.gru_layers for _ in range(per)]


def _recurrent(cell: str, layer: GRULayer, n: int, **kwargs: Any) -> Any:
    keras = tfruntime.keras()
    if cell == "gru":
        return keras.layers.GRU(layer.units, reset_after=layer.reset_after, name=f"gru_{n}", **kwargs)
    return keras.layers.LSTM(layer.units, name=f"lstm_{n}", **kwargs)


def _dense(layer: DenseLayer, n: int) -> Any:
    return tfruntime.keras().layers.Dense(layer.units, activation=layer.activation, name=f"dense_{n}")


def _stack(
    network: Network,
    x: Any,
    *,
    cell: str,
    dropout: float,
    sequences: bool,
    mask: Any = None,
    states: Sequence[Any] | None = None,
    return_state: bool = False,
    stateful: bool = False,
) -> tuple[Any, list[Any]]:
    """Apply the layer list to ``x``; returns the output and (with ``return_state``) the final states."""
    keras = tfruntime.keras()
    _check_cell(cell)
    per = 2 if cell == "lstm" else 1
    last_gru = len(network.gru_layers) - 1
    finals: list[Any] = []
    v, g = x, 0
    for n, layer in enumerate(network.layers):
        if n > 0 and dropout > 0:
            v = keras.layers.Dropout(dropout, name=f"dropout_{n}")(v)
        if isinstance(layer, GRULayer):
            kwargs: dict[str, Any] = {"return_sequences": sequences or g < last_gru}
            if return_state:
                kwargs["return_state"] = True
            if stateful:
                kwargs["stateful"] = True
            rnn = _recurrent(cell, layer, n, **kwargs)
            call: dict[str, Any] = {}
            if mask is not None:
                call["mask"] = mask
            if states is not None:
                call["initial_state"] = list(states[per * g : per * (g + 1)])
            out = rnn(v, **call)
            if return_state:
                v, *final = out
                finals += final
            else:
                v = out
            g += 1
        else:
            v = _dense(layer, n)(v)
    return v, finals


def window_model(network: Network, window: int | None, *, dropout: float = 0.0, cell: str = "gru") -> Any:
    """Input (window, I) to the forecast (horizon,): the GRU stack, then the dense layers."""
    keras = tfruntime.keras()
    inputs = keras.Input((window, network.input_features), name="window")
    y, _ = _stack(network, inputs, cell=cell, dropout=dropout, sequences=False)
    return keras.Model(inputs, y, name=f"{cell}_window")


def sequence_model(network: Network, *, dropout: float = 0.0, cell: str = "gru") -> Any:
    """Inputs ``x`` (B, T, I), ``mask`` (B, T) bool and the initial states (:func:`state_units`).

    Outputs ``y`` (B, T, horizon) and the final states, in the same order as the inputs.
    """
    keras = tfruntime.keras()
    x = keras.Input((None, network.input_features), name="x")
    mask = keras.Input((None,), dtype="bool", name="mask")
    states = [keras.Input((u,), name=f"state_{k}") for k, u in enumerate(state_units(network, cell))]
    y, finals = _stack(
        network, x, cell=cell, dropout=dropout, sequences=True, mask=mask, states=states, return_state=True
    )
    return keras.Model([x, mask, *states], [y, *finals], name=f"{cell}_sequence")


def stateful_model(network: Network, *, batch: int, steps: int | None, cell: str = "gru") -> Any:
    """Keras ``stateful=True``: input (batch, steps, I) with a fixed batch, output (batch, steps, horizon).

    The state carries over from one call to the next until ``reset_states()``.
    """
    keras = tfruntime.keras()
    x = keras.Input(batch_shape=(batch, steps, network.input_features), name="x")
    y, _ = _stack(network, x, cell=cell, dropout=0.0, sequences=True, stateful=True)
    return keras.Model(x, y, name=f"{cell}_stateful")


def step_model(network: Network) -> Any:
    """One step with explicit state: ``[x_t (B, I), h_prev (B, state_size)]`` to ``[y (B, horizon), h_t]``."""
    keras = tfruntime.keras()
    x = keras.Input((network.input_features,), name="x_t")
    h = keras.Input((network.state_size,), name="h_prev")
    states, offset = [], 0
    for gru in network.gru_layers:
        states.append(h[:, offset : offset + gru.units])
        offset += gru.units
    seq = keras.ops.expand_dims(x, 1)
    v: Any = seq
    finals: list[Any] = []
    g = 0
    for n, layer in enumerate(network.layers):
        if isinstance(layer, GRULayer):
            rnn = _recurrent("gru", layer, n, return_sequences=True, return_state=True)
            seq, state = rnn(seq, initial_state=[states[g]])
            finals.append(state)
            v = state  # the last step's output is the new state
            g += 1
        else:
            v = _dense(layer, n)(v)
    h_t = finals[0] if len(finals) == 1 else keras.ops.concatenate(finals, axis=-1)
    return keras.Model([x, h], [v, h_t], name="gru_step")


# -- weights ------------------------------------------------------------------------------------------


def layer_of(keras_layer: Any) -> Layer:
    """The :mod:`edge_gru.layers` description of a Keras GRU or Dense layer (options assumed checked)."""
    keras = tfruntime.keras()
    cfg = keras_layer.get_config()
    if isinstance(keras_layer, keras.layers.GRU):
        return GRULayer(int(cfg["units"]), bool(cfg.get("reset_after", True)))
    if isinstance(keras_layer, keras.layers.Dense):
        return DenseLayer(int(cfg["units"]), str(cfg.get("activation") or "linear"))
    raise ValueError(f"layer {keras_layer.name!r} ({type(keras_layer).__name__}) is not a GRU or Dense layer")


def weights_from_layers(keras_layers: Sequence[Any], *, where: str) -> NetworkWeights:
    """NetworkWeights of a chain of Keras GRU and Dense layers; a layer without bias gets zeros."""
    layers = tuple(layer_of(k) for k in keras_layers)
    if not layers:
        raise ValueError(f"{where}: no GRU or Dense layers")
    first = [np.asarray(w) for w in keras_layers[0].get_weights()]
    if not first:
        raise ValueError(f"{where}: layer {keras_layers[0].name!r} is not built (give the model an input shape)")
    network = Network(int(first[0].shape[0]), layers)
    per_layer = []
    for k, shapes in zip(keras_layers, network.shapes(), strict=True):
        arrays = [np.asarray(w, np.float32) for w in k.get_weights()]
        if len(arrays) == len(shapes) - 1:  # use_bias=False
            arrays.append(np.zeros(shapes["bias"], np.float32))
        per_layer.append(arrays)
    return NetworkWeights.from_keras_arrays(network, per_layer)


def _weighted(model: Any) -> list[Any]:
    keras = tfruntime.keras()
    return [layer for layer in model.layers if isinstance(layer, keras.layers.GRU | keras.layers.Dense)]


def weights_of(model: Any) -> NetworkWeights:
    """The GRU and Dense layers of a model built here (or any GRU/Dense chain), in order."""
    return weights_from_layers(_weighted(model), where=f"keras model {model.name!r}")


def load_weights_into(model: Any, weights: NetworkWeights) -> None:
    """Set a model's GRU and Dense layers (in order) from bundle weights."""
    targets = _weighted(model)
    if len(targets) != len(weights.network.layers):
        raise ValueError(
            f"keras model {model.name!r} has {len(targets)} GRU/Dense layers, the weights {len(weights.network.layers)}"
        )
    for target, arrays in zip(targets, weights.keras_arrays(), strict=True):
        target.set_weights(arrays)


def window_model_of(weights: NetworkWeights, window: int | None) -> Any:
    """:func:`window_model` holding ``weights``."""
    model = window_model(weights.network, window)
    load_weights_into(model, weights)
    return model


def stateful_model_of(weights: NetworkWeights, *, batch: int, steps: int | None) -> Any:
    """:func:`stateful_model` holding ``weights``."""
    model = stateful_model(weights.network, batch=batch, steps=steps)
    load_weights_into(model, weights)
    return model


def step_model_of(weights: NetworkWeights) -> Any:
    """:func:`step_model` holding ``weights``."""
    model = step_model(weights.network)
    load_weights_into(model, weights)
    return model
