"""Small random Keras models for parity tests, written as a user would write them.

Built with plain ``keras.layers`` (not :mod:`edge_gru.train.networks`), so the import and
the backends are checked against Keras itself; biases are randomized too, so they are exercised.
"""

from __future__ import annotations

import numpy as np

from edge_gru.layers import GRULayer, Network


def _layers(network: Network, *, dropout: float, stateful: bool):  # type: ignore[no-untyped-def]
    import keras

    last_gru = len(network.gru_layers) - 1
    out, g = [], 0
    for n, layer in enumerate(network.layers):
        if n > 0 and dropout > 0:
            out.append(keras.layers.Dropout(dropout))
        if isinstance(layer, GRULayer):
            seq = stateful or g < last_gru
            out.append(
                keras.layers.GRU(layer.units, reset_after=layer.reset_after, return_sequences=seq, stateful=stateful)
            )
            g += 1
        else:
            out.append(
                keras.layers.Dense(layer.units, activation=None if layer.activation == "linear" else layer.activation)
            )
    return out


def random_model(  # type: ignore[no-untyped-def]
    network: Network, window: int | None, *, seed: int, dropout: float = 0.0, functional: bool = False
):
    """``network`` as a Keras ``Sequential`` (or functional-API chain) with random weights and biases."""
    import keras

    keras.utils.set_random_seed(seed)
    if functional:
        inputs = keras.Input((window, network.input_features))
        v = inputs
        for layer in _layers(network, dropout=dropout, stateful=False):
            v = layer(v)
        model = keras.Model(inputs, v)
    else:
        model = keras.Sequential(
            [keras.Input((window, network.input_features)), *_layers(network, dropout=dropout, stateful=False)]
        )
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        arrays = layer.get_weights()
        if arrays:  # GRU and Dense: the bias is the last array
            arrays[-1] = rng.normal(0, 0.3, arrays[-1].shape).astype(np.float32)
            layer.set_weights(arrays)
    return model


def random_gru_model(units: int, features: int, window: int | None, *, reset_after: bool, seed: int):  # type: ignore[no-untyped-def]
    """The classic GRU(units) + Dense(1)."""
    from edge_gru.layers import DenseLayer

    return random_model(Network(features, (GRULayer(units, reset_after), DenseLayer(1))), window, seed=seed)


def stateful_twin(model, network: Network, chunk: int):  # type: ignore[no-untyped-def]
    """The same weights in a ``stateful=True`` model of batch 1 whose GRUs all return sequences."""
    import keras

    twin = keras.Sequential(
        [keras.Input(batch_shape=(1, chunk, network.input_features)), *_layers(network, dropout=0.0, stateful=True)]
    )
    twin.set_weights(model.get_weights())
    return twin
