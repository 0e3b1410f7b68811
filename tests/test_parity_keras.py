"""The compiled and numpy backends reproduce Keras 3 GRU stacks and dense heads exactly (float32 tolerance).

Every case is a Keras model written as a user writes it (:mod:`tests.kerasmodels`), imported
with ``import_keras``; Keras ``predict`` and a ``stateful=True`` twin fed chunk after chunk
are the references. One Keras model, and one set of Keras outputs, per case.
"""

from __future__ import annotations

import functools
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("keras", reason="parity with Keras needs the [train] extra")

import edge_gru
from edge_gru.layers import DenseLayer, GRULayer, Network
from edge_gru.train.keras_import import import_keras
from tests.kerasmodels import random_model, stateful_twin


@dataclass(frozen=True)
class Case:
    network: Network
    window: int
    dropout: float = 0.0
    functional: bool = False


CASES = {
    "product card GRU(50) > Dense(1)": Case(Network(1, (GRULayer(50), DenseLayer(1))), 10),
    "GRU(9, reset_after=False) > Dense(1)": Case(Network(1, (GRULayer(9, False), DenseLayer(1))), 7),
    "2 layers, mixed reset_after": Case(Network(2, (GRULayer(8), GRULayer(5, False), DenseLayer(1))), 12),
    "3 layers": Case(Network(3, (GRULayer(6, False), GRULayer(5), GRULayer(4, False), DenseLayer(1))), 9),
    "dense heads relu > tanh > sigmoid": Case(
        Network(2, (GRULayer(6), DenseLayer(5, "relu"), DenseLayer(4, "tanh"), DenseLayer(2, "sigmoid"))), 8
    ),
    "Dense(3), 4 inputs": Case(Network(4, (GRULayer(7), DenseLayer(3))), 6),
    "dropout between layers": Case(
        Network(1, (GRULayer(6), GRULayer(4), DenseLayer(3, "relu"), DenseLayer(1))), 8, dropout=0.3
    ),
    "functional, 2 layers, dense head": Case(
        Network(3, (GRULayer(5, False), GRULayer(4), DenseLayer(6, "tanh"), DenseLayer(2))), 5, functional=True
    ),
}
BACKENDS = ["numba", "numpy"]
STEPS, CHUNK = 10_000, 100


@functools.cache
def _root() -> Path:
    return Path(tempfile.mkdtemp(prefix="edge-gru-parity-"))


@functools.cache
def _keras_case(name: str):  # type: ignore[no-untyped-def]
    """The Keras model of a case, its bundles (window and stateful) and Keras's outputs on fixed inputs."""
    case = CASES[name]
    seed = sorted(CASES).index(name) + 1
    model = random_model(case.network, case.window, seed=seed, dropout=case.dropout, functional=case.functional)
    root = _root() / str(seed)
    import_keras(model, root / "window")
    import_keras(model, root / "stateful", mode="stateful", window=1, warmup=1)
    rng = np.random.default_rng(seed)
    features = case.network.input_features
    windows = rng.normal(0, 1.5, size=(1000, case.window, features)).astype(np.float32)
    predicted = model.predict(windows, verbose=0, batch_size=500)
    series = rng.normal(0, 1.0, size=(case.window + 30, features)).astype(np.float32)
    stacked = np.stack([series[t - case.window + 1 : t + 1] for t in range(case.window - 1, series.shape[0])])
    ring = model.predict(stacked, verbose=0)
    t = np.arange(STEPS)
    phase = np.arange(features)[None, :]
    long = (np.sin(2 * np.pi * t[:, None] / 48 + phase) + 0.3 * rng.normal(size=(STEPS, features))).astype(np.float32)
    twin = stateful_twin(model, case.network, CHUNK)
    # predict_on_batch runs a compiled graph and keeps the stateful layers' state between calls
    stateful = np.concatenate([twin.predict_on_batch(long[None, i : i + CHUNK])[0] for i in range(0, STEPS, CHUNK)])
    return root, windows, predicted, series, ring, long, stateful


def _rows(values: np.ndarray | None, forecasts: np.ndarray, horizon: int) -> np.ndarray:
    return forecasts[:, None] if horizon == 1 else np.asarray(values)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(CASES))
def test_predict_matches_keras(name: str, backend: str) -> None:
    case = CASES[name]
    root, windows, expected, series, ring, _, _ = _keras_case(name)
    model = edge_gru.load(root / "window", backend=backend)
    assert model.manifest.network == case.network
    got = model.predict(windows)
    horizon = case.network.horizon
    assert got.shape == ((1000,) if horizon == 1 else (1000, horizon))
    assert np.max(np.abs(got.reshape(expected.shape) - expected)) <= 1e-5
    # Window mode through the pool: a ring buffer of the last W samples gives the same forecasts.
    pool = model.pool(max_streams=4)
    out = []
    for t in range(series.shape[0]):
        r = pool.update_detailed(["s"], series[t : t + 1])
        out.append(_rows(r.values, r.forecasts, horizon)[0])
    forecasts = np.array(out)
    assert np.all(np.isnan(forecasts[: case.window - 1]))
    assert np.max(np.abs(forecasts[case.window - 1 :] - ring)) <= 1e-5


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(CASES))
def test_stateful_10k_steps_match_keras_without_drift(name: str, backend: str) -> None:
    """10,000 steps with carried state equal Keras ``stateful=True`` fed chunk after chunk."""
    case = CASES[name]
    root, *_, long, expected = _keras_case(name)
    pool = edge_gru.load(root / "stateful", backend=backend).pool(max_streams=2)
    horizon = case.network.horizon
    got = np.empty((STEPS, horizon))
    for i in range(STEPS):
        r = pool.update_detailed(["s"], long[i : i + 1])
        got[i] = _rows(r.values, r.forecasts, horizon)[0]
    err = np.abs(got - expected)
    assert err.max() <= 1e-4
    # No drift: the error late in the run is no larger in kind than early on.
    assert err[-1000:].max() <= max(10 * err[:1000].max(), 1e-5)


def test_keras_backend_steps_match_keras_stateful() -> None:
    """The ``keras`` reference backend (explicit-state step model) is the stateful Keras model too."""
    from edge_gru.bundle import load_bundle
    from edge_gru.train.keras_backend import KerasBackend

    name = "functional, 2 layers, dense head"
    root, windows, predicted, *_, long, expected = _keras_case(name)
    backend = KerasBackend(load_bundle(root / "stateful"))
    h = np.zeros((1, backend.state_size), np.float32)
    rows = np.zeros(1, np.int64)
    got = np.concatenate([backend.step(long[i : i + 1], h, rows) for i in range(300)])
    assert got.shape == (300, 2)
    assert np.max(np.abs(got - expected[:300])) <= 1e-5
    assert np.max(np.abs(backend.run_windows(windows) - predicted)) <= 1e-5
