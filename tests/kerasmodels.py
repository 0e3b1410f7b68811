"""Small random Keras GRU models for parity tests (biases randomized too, so they are exercised)."""

from __future__ import annotations

import numpy as np


def random_gru_model(units: int, features: int, window: int | None, *, reset_after: bool, seed: int):  # type: ignore[no-untyped-def]
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [keras.Input((window, features)), keras.layers.GRU(units, reset_after=reset_after), keras.layers.Dense(1)]
    )
    rng = np.random.default_rng(seed)
    weights = model.get_weights()
    weights[2] = rng.normal(0, 0.3, weights[2].shape).astype(np.float32)  # GRU bias
    weights[4] = rng.normal(0, 0.3, weights[4].shape).astype(np.float32)  # Dense bias
    model.set_weights(weights)
    return model


def stateful_sequence_twin(model, units: int, features: int, chunk: int, *, reset_after: bool):  # type: ignore[no-untyped-def]
    """The same weights in a ``stateful=True``, ``return_sequences=True`` model of batch 1."""
    import keras

    twin = keras.Sequential(
        [
            keras.Input(batch_shape=(1, chunk, features)),
            keras.layers.GRU(units, reset_after=reset_after, stateful=True, return_sequences=True),
            keras.layers.Dense(1),
        ]
    )
    twin.set_weights(model.get_weights())
    return twin
