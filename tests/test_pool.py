"""Per-stream rules of the pool, checked against a hand-run of the numpy reference step."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import edge_gru
from edge_gru import Status, reference
from edge_gru.bundle import Normalization
from edge_gru.errors import CheckpointError
from edge_gru.harness import DEFAULT_MODEL
from edge_gru.layers import DenseLayer, GRULayer, Network
from edge_gru.normalization import normalize_series
from tests.bundles import make_bundle


@pytest.fixture(params=["numpy", "numba"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def manual_stateful(bundle_dir: Path, values: np.ndarray) -> np.ndarray:
    """Forecasts of a stateful fixed-normalization bundle computed by hand with the reference step."""
    b = edge_gru.load_bundle(bundle_dir)
    n = b.manifest.normalization
    h = np.zeros((1, b.manifest.state_size), np.float32)
    out = []
    for v in np.atleast_2d(values.T).T:
        z = ((v - np.array(n.input_mean)) / np.array(n.input_std)).astype(np.float32)[None, :]
        y = reference.gru_step(b.weights, z, h)[0, 0]
        out.append(n.target_mean + n.target_std * float(y))
    return np.array(out)


def feed(pool: edge_gru.StreamPool, sid: str, values: np.ndarray, ts: np.ndarray | None = None) -> np.ndarray:
    return np.array(
        [pool.update([sid], values[i : i + 1], None if ts is None else ts[i : i + 1])[0] for i in range(len(values))]
    )


def test_warmup_then_forecasts_equal_reference(tmp_path: Path, backend: str) -> None:
    make_bundle(tmp_path / "b", warmup=3)
    model = edge_gru.load(tmp_path / "b", backend=backend)
    values = 10 + 2 * np.sin(np.arange(40) / 3)
    got = feed(model.pool(4), "a", values)
    assert np.isnan(got[:2]).all()
    np.testing.assert_allclose(got[2:], manual_stateful(tmp_path / "b", values)[2:], atol=1e-5)


def test_status_codes_and_forecast_timestamps(tmp_path: Path) -> None:
    make_bundle(tmp_path / "b", warmup=2, sample_period_s=60.0)
    pool = edge_gru.load(tmp_path / "b", backend="numpy").pool(4)
    r1 = pool.update_detailed(["a"], [10.0], [0.0])
    r2 = pool.update_detailed(["a"], [11.0], [60.0])
    assert r1.status.tolist() == [Status.WARMUP] and np.isnan(r1.forecasts[0])
    assert r2.status.tolist() == [Status.FORECAST] and np.isfinite(r2.forecasts[0])
    assert r2.forecast_ts.tolist() == [120.0]


def test_non_finite_readings_leave_the_state_untouched(tmp_path: Path, backend: str) -> None:
    make_bundle(tmp_path / "b", warmup=1)
    pool = edge_gru.load(tmp_path / "b", backend=backend).pool(4)
    values = 10 + np.cos(np.arange(30) / 4)
    clean = feed(pool, "clean", values)
    dirty_values = np.insert(values, [5, 9, 9], [np.nan, np.inf, -np.inf])
    dirty = feed(pool, "dirty", dirty_values)
    keep = np.isfinite(dirty_values)
    assert np.isnan(dirty[~keep]).all()
    np.testing.assert_allclose(dirty[keep], clean, atol=1e-6)
    res = pool.update_detailed(["dirty", "clean"], [np.nan, 10.0])
    assert res.status.tolist() == [Status.NOT_FINITE, Status.FORECAST]


def test_out_of_range_readings_are_dropped_and_leave_the_state_untouched(tmp_path: Path, backend: str) -> None:
    """1e308 is a named drop, not an overflow that restarts the stream's warm-up (as NaN/inf are)."""
    make_bundle(tmp_path / "b", warmup=2, normalization=Normalization(kind="causal", halflife=8.0, clip=6.0))
    pool = edge_gru.load(tmp_path / "b", backend=backend).pool(4, max_abs_value=1e6)
    values = 10 + np.cos(np.arange(30) / 4)
    clean = feed(pool, "clean", values)
    spikes = [1e308, -1e300, 1.5e6, -2e6]
    dirty_values = np.insert(values, [5, 9, 9, 20], spikes)
    with np.errstate(all="raise"):  # no floating-point warning escapes the pool
        res = [pool.update_detailed(["dirty"], [v], now=0.0) for v in dirty_values]
    status = np.array([r.status[0] for r in res])
    dirty = np.array([r.forecasts[0] for r in res])
    keep = np.abs(dirty_values) <= 1e6
    assert (status[~keep] == Status.OUT_OF_RANGE).all() and (~keep).sum() == 4
    np.testing.assert_array_equal(dirty[keep], clean)
    first = pool.update_detailed(["new"], [1e7])  # a stream whose first reading is out of range is not created
    assert first.status.tolist() == [Status.OUT_OF_RANGE] and "new" not in pool


def test_stream_ids_longer_than_max_id_bytes_are_refused(tmp_path: Path) -> None:
    make_bundle(tmp_path / "b", warmup=2)
    pool = edge_gru.load(tmp_path / "b", backend="numpy").pool(8, max_id_bytes=8)
    r = pool.update_detailed(["a" * 8, "a" * 9, "ü" * 4, "ü" * 5], [1.0, 1.0, 1.0, 1.0])
    assert r.status.tolist() == [Status.WARMUP, Status.ID_TOO_LONG, Status.WARMUP, Status.ID_TOO_LONG]
    assert sorted(pool.stream_ids) == sorted(["a" * 8, "ü" * 4])


def test_update_received_stamps_with_receive_time_only_when_configured(tmp_path: Path) -> None:
    """Own timestamps go through the order rules; receive times only with use_receive_time."""
    make_bundle(tmp_path / "b", warmup=1, sample_period_s=60.0)
    model = edge_gru.load(tmp_path / "b", backend="numpy")
    ts = np.array([1000.0, 1060.0, 500.0])  # the last is a receive time older than the stream's own
    stamped = np.array([True, True, False])
    values = np.array([1.0, 2.0, 3.0])
    plain = model.pool(4).update_received(["a", "a", "a"], values, ts, stamped)
    assert plain.status.tolist() == [Status.FORECAST] * 3  # no ts rules for the unstamped reading
    assert plain.forecast_ts.tolist() == [1060.0, 1120.0, 560.0]  # receive time + the bundle's period
    by_receive = model.pool(4, use_receive_time=True).update_received(["a", "a", "a"], values, ts, stamped)
    assert by_receive.status.tolist() == [Status.FORECAST, Status.FORECAST, Status.OUT_OF_ORDER]
    ref = model.pool(4).update_detailed(["a", "a"], values[:2], ts[:2])
    np.testing.assert_array_equal(by_receive.forecasts[:2], ref.forecasts)


def test_rebind_keeps_the_states_for_the_same_bundle_only(tmp_path: Path) -> None:
    make_bundle(tmp_path / "b", warmup=1)
    make_bundle(tmp_path / "c", warmup=1, seed=5)
    numpy_model = edge_gru.load(tmp_path / "b", backend="numpy")
    pool = numpy_model.pool(4)
    feed(pool, "a", np.arange(5.0))
    ref = numpy_model.pool(4)
    feed(ref, "a", np.arange(5.0))
    pool.rebind(edge_gru.load(tmp_path / "b", backend="numba"))
    assert pool.model.backend_name == "numba"  # type: ignore[attr-defined]
    np.testing.assert_allclose(pool.update(["a"], [5.0]), ref.update(["a"], [5.0]), atol=1e-5)
    other = edge_gru.load(tmp_path / "c", backend="numpy")
    assert not pool.compatible(other)
    with pytest.raises(ValueError, match="new pool"):
        pool.rebind(other)


def test_out_of_order_and_duplicate_timestamps_are_dropped(tmp_path: Path, backend: str) -> None:
    make_bundle(tmp_path / "b", warmup=1, sample_period_s=10.0)
    pool = edge_gru.load(tmp_path / "b", backend=backend).pool(4)
    values = 10 + np.sin(np.arange(20))
    ts = np.arange(20) * 10.0
    clean = feed(pool, "clean", values, ts)
    res = []
    for i in range(20):
        res.append(pool.update_detailed(["x"], values[i : i + 1], ts[i : i + 1]))
        if i == 5:
            dup = pool.update_detailed(["x"], [99.0], [ts[i]])
            old = pool.update_detailed(["x"], [99.0], [ts[i] - 25])
    assert dup.status[0] == Status.DUPLICATE and np.isnan(dup.forecasts[0])
    assert old.status[0] == Status.OUT_OF_ORDER
    np.testing.assert_allclose([r.forecasts[0] for r in res], clean, atol=1e-6)
    # A NaN timestamp is a non-finite reading, not a reading without a time.
    assert pool.update_detailed(["x"], [10.0], [np.nan]).status[0] == Status.NOT_FINITE


def test_gap_resets_the_stream(tmp_path: Path, backend: str) -> None:
    make_bundle(tmp_path / "b", warmup=3, sample_period_s=60.0)
    model = edge_gru.load(tmp_path / "b", backend=backend)
    pool = model.pool(4)
    values = 10 + np.sin(np.arange(30) / 2)
    ts = np.arange(30) * 60.0
    ts[15:] += 3600  # an hour without readings: > gap_factor (3) periods
    got = []
    resets = []
    for i in range(30):
        r = pool.update_detailed(["a"], values[i : i + 1], ts[i : i + 1])
        got.append(r.forecasts[0])
        resets.append(bool(r.resets[0]))
    assert resets == [i == 15 for i in range(30)]
    assert pool.gap_resets == 1
    after = np.array(got[15:])
    fresh = feed(model.pool(4), "fresh", values[15:], ts[15:])
    assert np.isnan(after[:2]).all()  # warm-up again
    np.testing.assert_allclose(after[2:], fresh[2:], atol=1e-6)


def test_sample_period_is_learned_per_stream(tmp_path: Path) -> None:
    make_bundle(tmp_path / "b", warmup=1, sample_period_s=None)
    pool = edge_gru.load(tmp_path / "b", backend="numpy").pool(4)
    for i in range(7):
        pool.update(["fast", "slow"], [10.0, 10.0], [i * 30.0, i * 900.0])
    assert pool.stream_period("fast") == 30.0
    assert pool.stream_period("slow") == 900.0
    # 200 s is a gap for the 30 s stream, not for the 900 s one.
    r = pool.update_detailed(["fast", "slow"], [10.0, 10.0], [6 * 30.0 + 200, 7 * 900.0])
    assert r.resets.tolist() == [True, False]
    assert r.forecast_ts[1] == 8 * 900.0


def test_stream_limit_and_idle_eviction(tmp_path: Path) -> None:
    make_bundle(tmp_path / "b", warmup=1)
    model = edge_gru.load(tmp_path / "b", backend="numpy")
    pool = model.pool(3)
    r = pool.update_detailed(["a", "b", "c", "d"], [10.0] * 4, now=0.0)
    assert r.status.tolist() == [0, 0, 0, Status.STREAM_LIMIT]
    assert len(pool) == 3 and "d" not in pool
    evicting = model.pool(3, idle_timeout_s=100.0)
    evicting.update_detailed(["a", "b", "c"], [10.0] * 3, now=0.0)
    evicting.update_detailed(["b", "c"], [10.0] * 2, now=50.0)
    assert evicting.update_detailed(["d"], [10.0], now=60.0).status[0] == Status.STREAM_LIMIT  # nobody idle long enough
    assert evicting.update_detailed(["d"], [10.0], now=120.0).status[0] == Status.FORECAST  # "a" idle 120 s
    assert sorted(evicting.stream_ids) == ["b", "c", "d"] and evicting.expired == 1
    assert evicting.expire_idle(30.0, now=130.0) == ["b", "c"]
    assert evicting.stream_ids == ["d"]


def test_many_distinct_streams_keep_memory_bounded(tmp_path: Path) -> None:
    make_bundle(tmp_path / "b", warmup=1)
    pool = edge_gru.load(tmp_path / "b", backend="numpy").pool(100, idle_timeout_s=1.0)
    for i in range(0, 5000, 50):
        pool.update_detailed([f"s{j}" for j in range(i, i + 50)], np.full(50, 10.0), now=float(i))
    assert len(pool) == 100
    assert pool.h.shape[0] <= 100
    assert pool.expired == 4900


def test_batched_update_equals_one_by_one(tmp_path: Path, backend: str) -> None:
    make_bundle(tmp_path / "b", warmup=2, units=12)
    model = edge_gru.load(tmp_path / "b", backend=backend)
    rng = np.random.default_rng(0)
    ids = [f"s{k}" for k in rng.integers(0, 7, size=300)]  # many repeats inside one batch
    values = 10 + rng.normal(size=300)
    batched = model.pool(10).update(ids, values)
    single_pool = model.pool(10)
    single = np.array([single_pool.update([sid], [v])[0] for sid, v in zip(ids, values, strict=True)])
    np.testing.assert_allclose(batched, single, atol=1e-6)


def test_checkpoint_round_trip_continues_exactly(tmp_path: Path, backend: str) -> None:
    make_bundle(tmp_path / "b", warmup=2, units=10, sample_period_s=None)
    model = edge_gru.load(tmp_path / "b", backend=backend)
    rng = np.random.default_rng(1)
    ids = ["a", "b", "c"]
    values = 10 + rng.normal(size=(60, 3))
    ts = np.arange(60) * 5.0
    whole = model.pool(8)
    first = model.pool(8)
    for t in range(30):
        whole.update(ids, values[t], np.full(3, ts[t]))
        first.update(ids, values[t], np.full(3, ts[t]))
    first.save(tmp_path / "state.npz")
    restored = edge_gru.load(tmp_path / "b", backend=backend).pool(8)
    restored.load(tmp_path / "state.npz")
    assert sorted(restored.stream_ids) == ids
    assert restored.stream_period("a") == 5.0
    for t in range(30, 60):
        expected = whole.update(ids, values[t], np.full(3, ts[t]))
        np.testing.assert_allclose(restored.update(ids, values[t], np.full(3, ts[t])), expected, atol=1e-6)
    # Old readings are still out of order after a restore.
    assert restored.update_detailed(["a"], [10.0], [0.0]).status[0] == Status.OUT_OF_ORDER


def test_checkpoint_refuses_other_bundles_and_garbage(tmp_path: Path) -> None:
    make_bundle(tmp_path / "b1", seed=1)
    make_bundle(tmp_path / "b2", seed=2)
    pool = edge_gru.load(tmp_path / "b1", backend="numpy").pool(4)
    pool.update(["a"], [10.0])
    pool.save(tmp_path / "state.npz")
    other = edge_gru.load(tmp_path / "b2", backend="numpy").pool(4)
    with pytest.raises(CheckpointError, match="written for bundle"):
        other.load(tmp_path / "state.npz")
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(CheckpointError, match="not a readable edge-gru checkpoint"):
        pool.load(tmp_path / "junk.npz")
    small = edge_gru.load(tmp_path / "b1", backend="numpy").pool(1)
    pool.update(["b"], [10.0])
    pool.save(tmp_path / "two.npz")
    with pytest.raises(CheckpointError, match="more than max_streams"):
        small.load(tmp_path / "two.npz")


def test_save_leaves_no_temporary_files(tmp_path: Path) -> None:
    make_bundle(tmp_path / "b")
    pool = edge_gru.load(tmp_path / "b", backend="numpy").pool(4)
    pool.update(["a"], [10.0])
    for _ in range(3):
        pool.save(tmp_path / "state" / "pool.npz") if (tmp_path / "state").exists() else (tmp_path / "state").mkdir()
    assert [p.name for p in (tmp_path / "state").iterdir()] == ["pool.npz"]


def test_multi_feature_values(tmp_path: Path, backend: str) -> None:
    make_bundle(tmp_path / "b", features=3, warmup=1, units=6)
    model = edge_gru.load(tmp_path / "b", backend=backend)
    pool = model.pool(4)
    values = 10 + np.random.default_rng(2).normal(size=(25, 3))
    got = np.array([pool.update(["m"], values[t : t + 1])[0] for t in range(25)])
    np.testing.assert_allclose(got, manual_stateful(tmp_path / "b", values), atol=1e-5)
    with pytest.raises(ValueError, match="expected"):
        pool.update(["m"], [1.0, 2.0])


def test_window_mode_ring_buffer_equals_predict(tmp_path: Path, backend: str) -> None:
    make_bundle(tmp_path / "b", mode="window", window=6, warmup=0)
    model = edge_gru.load(tmp_path / "b", backend=backend)
    values = 10 + np.sin(np.arange(30) / 2)
    got = feed(model.pool(2), "w", values)
    assert np.isnan(got[:5]).all()
    windows = np.stack([values[t - 5 : t + 1] for t in range(5, 30)])[:, :, None]
    np.testing.assert_allclose(got[5:], model.predict(windows), atol=1e-6)


CAUSAL = Normalization(kind="causal", halflife=20.0, clip=8.0)


def test_causal_pool_equals_normalize_series_and_reference(tmp_path: Path, backend: str) -> None:
    make_bundle(tmp_path / "b", normalization=CAUSAL, warmup=1)
    b = edge_gru.load_bundle(tmp_path / "b")
    values = 300 + 40 * np.sin(np.arange(200) / 5) + np.random.default_rng(4).normal(size=200)
    z, offset, scale = normalize_series(CAUSAL, values)
    h = np.zeros((1, b.manifest.state_size), np.float32)
    expected = np.array(
        [offset[t] + scale[t] * reference.gru_step(b.weights, z[t : t + 1], h)[0, 0] for t in range(200)]
    )
    got = feed(edge_gru.load(tmp_path / "b", backend=backend).pool(2), "c", values)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-4)


def test_causal_normalization_is_unit_free(tmp_path: Path, backend: str) -> None:
    """The generic model serves any unit: forecasts of a*x+b are a*forecast+b."""
    make_bundle(tmp_path / "b", normalization=CAUSAL, warmup=1)
    pool = edge_gru.load(tmp_path / "b", backend=backend).pool(4)
    x = 20 + 3 * np.sin(np.arange(300) / 7) + 0.2 * np.random.default_rng(5).normal(size=300)
    celsius = feed(pool, "celsius", x)
    kelvin_milli = feed(pool, "mK", (x + 273.15) * 1000)
    # The first reading of a stream has no spread yet, so its scale is the floor (which depends on
    # the level); from the second reading on the spread sets the scale.
    np.testing.assert_allclose(kelvin_milli[1:], (celsius[1:] + 273.15) * 1000, rtol=1e-6)


def test_reset_and_remove(tmp_path: Path) -> None:
    make_bundle(tmp_path / "b", warmup=2)
    pool = edge_gru.load(tmp_path / "b", backend="numpy").pool(4)
    pool.update(["a"], [10.0])
    assert np.isfinite(pool.update(["a"], [10.0])[0])
    pool.reset("a")
    assert np.isnan(pool.update(["a"], [10.0])[0])
    assert pool.remove("a") and not pool.remove("a")
    assert len(pool) == 0


def test_mixed_batches_admit_new_streams_in_arrival_order() -> None:
    """The last free slot goes to the stream that arrived first, stamped or not, however readings were batched."""
    model = edge_gru.load(DEFAULT_MODEL, backend="numpy")
    ids = ["plain", "stamped", "plain", "stamped"]
    values = np.array([1.0, 2.0, 1.5, 2.5])
    ts = np.array([100.0, 1000.0, 101.0, 1060.0])  # receive times where not stamped
    stamped = np.array([False, True, False, True])
    batched = model.pool(max_streams=1).update_received(ids, values, ts, stamped, now=0.0)
    one_by_one = model.pool(max_streams=1)
    singles = [one_by_one.update_received(ids[i : i + 1], values[i : i + 1], ts[i : i + 1], stamped[i : i + 1], now=0.0)
               for i in range(len(ids))]  # fmt: skip
    assert list(batched.status) == [int(r.status[0]) for r in singles]
    assert Status(int(batched.status[1])) is Status.STREAM_LIMIT and "plain" in one_by_one


STACK = Network(2, (GRULayer(6), GRULayer(5, reset_after=False), DenseLayer(4, "relu"), DenseLayer(3)))


@pytest.mark.parametrize("mode", ["stateful", "window"])
def test_a_stack_with_a_horizon_serves_every_step_like_the_reference(tmp_path: Path, backend: str, mode: str) -> None:
    """The pool holds the stack's state rows opaquely and returns all k steps, denormalized like step 1."""
    b = make_bundle(tmp_path / "b", network=STACK, mode=mode, window=4, warmup=4)
    n = b.manifest.normalization
    rng = np.random.default_rng(8)
    x = rng.normal(10, 2, (30, 2))
    z = ((x - np.array(n.input_mean)) / np.array(n.input_std)).astype(np.float32)
    if mode == "stateful":
        h = np.zeros((1, STACK.state_size), np.float32)
        y = np.concatenate([reference.gru_step(b.weights, z[t : t + 1], h) for t in range(30)])
    else:
        y = np.concatenate([reference.run_windows(b.weights, z[max(t - 3, 0) : t + 1][None]) for t in range(30)])
    want = n.target_mean + n.target_std * y.astype(np.float64)
    pool = edge_gru.load(b.path, backend=backend).pool(4)
    got = np.concatenate([pool.update_detailed(["s"], x[t : t + 1]).values for t in range(30)])  # type: ignore[misc]
    assert np.isnan(got[:3]).all()
    np.testing.assert_allclose(got[3:], want[3:], rtol=1e-6, atol=1e-5)
    if mode == "stateful":
        assert pool.h.shape[1] == STACK.state_size == 11


def test_a_stack_checkpoint_restores_exactly(tmp_path: Path, backend: str) -> None:
    b = make_bundle(tmp_path / "b", network=STACK, warmup=2)
    first = edge_gru.load(b.path, backend=backend).pool(8)
    rng = np.random.default_rng(9)
    x = rng.normal(10, 2, (40, 3, 2))
    for t in range(20):
        first.update(["a", "b", "c"], x[t])
    first.save(tmp_path / "state.npz")
    second = edge_gru.load(b.path, backend=backend).pool(8)
    second.load(tmp_path / "state.npz")
    for t in range(20, 40):
        r1, r2 = first.update_detailed(["a", "b", "c"], x[t]), second.update_detailed(["a", "b", "c"], x[t])
        np.testing.assert_array_equal(r1.values, r2.values)
