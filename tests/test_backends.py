"""Every backend passes the same API tests against the numpy reference and Keras.

Parametrized over numba, numpy, tflite and tflite-int8 on real trained bundles: pool
updates against the reference maths, window prediction against Keras ``predict``, a
stream listed twice in one batch, and checkpoint round trips.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import edge_gru
from edge_gru import reference
from edge_gru.backends import BACKENDS as REGISTRY
from edge_gru.bundle import load_bundle
from edge_gru.normalization import StreamNormalizer
from tests.trained_models import learnable_series, trained

BACKENDS = list(REGISTRY)  # every registered backend runs this suite
# absolute tolerance on forecasts in raw units (the series has std ~2.3)
TOLERANCE = {"numba": 1e-5, "numpy": 1e-9, "tflite": 1e-4, "tflite-int8": 0.25}


def test_every_registered_backend_has_a_tolerance_and_an_honest_error_for_unknown_names() -> None:
    from edge_gru.backends import BACKEND_CHOICES, create_backend
    from edge_gru.errors import BackendUnavailableError

    assert set(TOLERANCE) == set(REGISTRY) and ("auto", *REGISTRY) == BACKEND_CHOICES
    with pytest.raises(BackendUnavailableError, match="choose one of numba, numpy, tflite, tflite-int8"):
        create_backend("tensorflow", None)  # type: ignore[arg-type]


def _reference_forecasts(path: Path, values: np.ndarray) -> np.ndarray:
    """One stream, stateful: the normalizer and the numpy reference step, no pool."""
    bundle = load_bundle(path)
    m = bundle.manifest
    norm = StreamNormalizer(m.normalization, 1, 0)
    norm.grow(1)
    rows = np.zeros(1, np.int64)
    h = np.zeros((1, m.state_size), np.float32)
    out = []
    for v in values:
        z = norm.transform(rows, np.array([[v]]))
        y = reference.gru_step(bundle.weights, z, h)[:, 0]
        out.append(norm.denormalize(rows, y)[0])
    return np.array(out)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["stateful", "causal"])
def test_pool_matches_reference(backend: str, mode: str) -> None:
    path = trained(mode)
    model = edge_gru.load(path, backend=backend)
    values = learnable_series(n=200, seed=5).target_values
    expected = _reference_forecasts(path, values)
    pool = model.pool(max_streams=4)
    got = np.array([pool.update(["s"], [v])[0] for v in values])
    warm = model.manifest.warmup
    assert np.isnan(got[: warm - 1]).all()
    err = np.abs(got[warm - 1 :] - expected[warm - 1 :])
    if backend == "tflite-int8":
        assert float(np.sqrt(np.mean(err**2))) < TOLERANCE[backend]
    else:
        assert err.max() < TOLERANCE[backend]


@pytest.mark.parametrize("backend", BACKENDS)
def test_window_predict_matches_keras(backend: str) -> None:
    from edge_gru.train.keras_backend import load_keras

    path = trained("window")
    x = learnable_series(n=400, seed=7).target_values
    windows = np.stack([x[i : i + 8] for i in range(0, 390, 1)])[:, :, None]
    expected = load_keras(path).predict(windows)
    got = edge_gru.load(path, backend=backend).predict(windows)
    err = np.abs(got - expected)
    if backend == "tflite-int8":
        assert float(np.sqrt(np.mean(err**2))) < TOLERANCE[backend]
    else:
        assert err.max() < max(TOLERANCE[backend], 1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_duplicate_ids_in_one_batch_advance_in_order(backend: str) -> None:
    path = trained("stateful")
    values = learnable_series(n=60, seed=2).target_values
    batched = edge_gru.load(path, backend=backend).pool(max_streams=8)
    single = edge_gru.load(path, backend=backend).pool(max_streams=8)
    ids = ["a", "b", "a", "a", "b", "c"]
    for t in range(0, 60, 6):
        chunk = values[t : t + 6]
        got = batched.update(ids, chunk)
        want = [single.update([sid], [v])[0] for sid, v in zip(ids, chunk, strict=True)]
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5, equal_nan=True)
    np.testing.assert_allclose(batched.h[:3], single.h[:3], atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_checkpoint_round_trip(backend: str, tmp_path: Path) -> None:
    path = trained("causal")
    values = learnable_series(n=80, seed=4).target_values
    ts = 1000.0 + 60.0 * np.arange(80)
    ids = ["x", "y", "z"]
    first = edge_gru.load(path, backend=backend).pool(max_streams=8)
    for t in range(50):
        first.update(ids, values[t] + np.arange(3), ts[[t, t, t]])
    first.save(tmp_path / "state.npz")
    second = edge_gru.load(path, backend=backend).pool(max_streams=8)
    second.load(tmp_path / "state.npz")
    for t in range(50, 80):
        a = first.update(ids, values[t] + np.arange(3), ts[[t, t, t]])
        b = second.update(ids, values[t] + np.arange(3), ts[[t, t, t]])
        np.testing.assert_array_equal(a, b)
    assert np.isfinite(a).all()


def test_many_streams_in_one_batch_match_reference() -> None:
    """More streams than one TFLite invoke holds: chunked, and still each stream's own forecast."""
    path = trained("stateful")
    n = 1500
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (n, 1)).astype(np.float32)
    bundle = load_bundle(path)
    h0 = rng.normal(0, 0.3, (n, bundle.manifest.state_size)).astype(np.float32)
    for backend in ("tflite", "numba"):
        model = edge_gru.load(path, backend=backend)
        h = h0.copy()
        y = model.backend.step(x, h, np.arange(n, dtype=np.int64))
        h_ref = h0.copy()
        y_ref = reference.gru_step(bundle.weights, x, h_ref)
        np.testing.assert_allclose(y, y_ref, atol=1e-4)
        np.testing.assert_allclose(h, h_ref, atol=1e-4)
