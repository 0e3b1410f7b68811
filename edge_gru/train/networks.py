"""Keras networks used for training and for the ``keras`` evaluation backend.

* :func:`window_network` — the product card's ``GRU(U) + Dense(1)`` on (W, I) windows.
* :func:`sequence_network` — the same cell over long masked sequences from a given
  initial state, returning every step's output and the final state: what truncated
  back-propagation with carried state needs (masked steps keep the state unchanged, so
  padding never disturbs it).
* :func:`weights_of` / :func:`load_weights_into` — move GRU + Dense weights between Keras
  layers and :class:`~edge_gru.bundle.GRUWeights` (Keras layouts, gate columns z | r | h).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edge_gru.bundle import GRUWeights
from edge_gru.train import tfruntime


def _cell_layer(cell: str, units: int, dropout: float, **kwargs: Any) -> Any:
    keras = tfruntime.keras()

    if cell == "gru":
        return keras.layers.GRU(units, dropout=dropout, reset_after=True, name="gru", **kwargs)
    if cell == "lstm":
        return keras.layers.LSTM(units, dropout=dropout, name="lstm", **kwargs)
    raise ValueError(f"cell must be 'gru' or 'lstm', not {cell!r}")


def window_network(*, units: int, window: int, features: int, dropout: float = 0.0, cell: str = "gru") -> Any:
    """``Sequential([GRU(units), Dense(1)])`` on (window, features) inputs."""
    keras = tfruntime.keras()

    return keras.Sequential(
        [
            keras.Input((window, features), name="window"),
            _cell_layer(cell, units, dropout),
            keras.layers.Dense(1, name="dense"),
        ],
        name=f"{cell}_window",
    )


def sequence_network(*, units: int, features: int, dropout: float = 0.0, cell: str = "gru") -> Any:
    """Inputs ``x`` (B, T, I), ``mask`` (B, T) bool and initial state(s); outputs y (B, T, 1) and final state(s)."""
    keras = tfruntime.keras()

    x = keras.Input((None, features), name="x")
    mask = keras.Input((None,), dtype="bool", name="mask")
    states = [keras.Input((units,), name="h0")]
    if cell == "lstm":
        states.append(keras.Input((units,), name="c0"))
    rnn = _cell_layer(cell, units, dropout, return_sequences=True, return_state=True)
    seq, *final = rnn(x, mask=mask, initial_state=states)
    y = keras.layers.Dense(1, name="dense")(seq)
    return keras.Model([x, mask, *states], [y, *final], name=f"{cell}_sequence")


def weights_of(network: Any) -> GRUWeights:
    """GRU + Dense(1) weights of a network built here (or any with layers named ``gru`` and ``dense``)."""
    kernel, recurrent, bias = (np.asarray(w, np.float32) for w in network.get_layer("gru").get_weights())
    dense_kernel, dense_bias = (np.asarray(w, np.float32) for w in network.get_layer("dense").get_weights())
    weights = GRUWeights(kernel, recurrent, bias, dense_kernel, dense_bias)
    weights.validate(where=f"keras network {network.name!r}")
    return weights


def load_weights_into(network: Any, weights: GRUWeights) -> None:
    """Set a network's ``gru`` and ``dense`` layers from bundle weights."""
    network.get_layer("gru").set_weights([weights.kernel, weights.recurrent_kernel, weights.bias])
    network.get_layer("dense").set_weights([weights.dense_kernel, weights.dense_bias])
