"""The compiled and numpy backends reproduce Keras 3 GRU + Dense(1) exactly (float32 tolerance)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("keras", reason="parity with Keras needs the [train] extra")

import edge_gru
from edge_gru.train.keras_import import import_keras
from tests.kerasmodels import random_gru_model, stateful_sequence_twin

CASES = [
    # (units, features, window, reset_after)
    (50, 1, 10, True),  # the product card's model
    (50, 1, 10, False),
    (8, 3, 1, True),
    (17, 2, 50, False),
    (33, 4, 25, True),
    (1, 1, 7, False),
]


@pytest.mark.parametrize(("units", "features", "window", "reset_after"), CASES)
@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_predict_matches_keras(
    tmp_path: Path, units: int, features: int, window: int, reset_after: bool, backend: str
) -> None:
    keras_model = random_gru_model(units, features, window, reset_after=reset_after, seed=units + window)
    bundle_dir = tmp_path / "bundle"
    import_keras(keras_model, bundle_dir)
    rng = np.random.default_rng(window)
    windows = rng.normal(0, 1.5, size=(2000, window, features)).astype(np.float32)
    expected = keras_model.predict(windows, verbose=0, batch_size=512)[:, 0]
    model = edge_gru.load(bundle_dir, backend=backend)
    got = model.predict(windows)
    assert got.shape == (2000,)
    assert np.max(np.abs(got - expected)) <= 1e-5
    # Window mode through the pool: a ring buffer of the last W samples gives the same forecasts.
    series = rng.normal(0, 1.0, size=(window + 40, features)).astype(np.float32)
    pool = model.pool(max_streams=4)
    forecasts = np.array([pool.update(["s"], series[t : t + 1])[0] for t in range(series.shape[0])])
    assert np.all(np.isnan(forecasts[: window - 1]))
    stacked = np.stack([series[t - window + 1 : t + 1] for t in range(window - 1, series.shape[0])])
    direct = keras_model.predict(stacked, verbose=0)[:, 0]
    assert np.max(np.abs(forecasts[window - 1 :] - direct)) <= 1e-5


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_stateful_10k_steps_match_keras_without_drift(tmp_path: Path, reset_after: bool, backend: str) -> None:
    """10,000 steps with carried state equal Keras ``stateful=True`` fed chunk after chunk."""
    units, features, chunk, steps = 32, 1, 100, 10_000
    keras_model = random_gru_model(units, features, None, reset_after=reset_after, seed=7)
    bundle_dir = tmp_path / "bundle"
    import_keras(keras_model, bundle_dir, mode="stateful", window=1, warmup=1)
    stateful = stateful_sequence_twin(keras_model, units, features, chunk, reset_after=reset_after)
    t = np.arange(steps)
    rng = np.random.default_rng(3)
    series = (np.sin(2 * np.pi * t / 48) + 0.3 * rng.normal(size=steps)).astype(np.float32)

    expected = np.concatenate(
        [
            np.asarray(stateful(series[i : i + chunk].reshape(1, chunk, 1), training=False))[0, :, 0]
            for i in range(0, steps, chunk)
        ]
    )
    pool = edge_gru.load(bundle_dir, backend=backend).pool(max_streams=2)
    got = np.array([pool.update(["s"], series[i : i + 1])[0] for i in range(steps)])
    err = np.abs(got - expected)
    assert err.max() <= 1e-4
    # No drift: the error late in the run is no larger in kind than early on.
    assert err[-1000:].max() <= max(10 * err[:1000].max(), 1e-5)
