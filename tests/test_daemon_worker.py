"""The daemon's worker in-process: batching across streams equals pool.update, drops are accounted."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import edge_gru
from edge_gru.daemon.config import StreamsConfig
from edge_gru.daemon.worker import Worker
from tests.conftest import DEFAULT_MODEL


class Collector:
    """A Publisher that keeps what it is given."""

    def __init__(self, fail_every: int = 0) -> None:
        self.messages: list[tuple[str, dict]] = []
        self.fail_every = fail_every
        self.calls = 0
        self.threads: set[str] = set()

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        self.calls += 1
        self.threads.add(threading.current_thread().name)
        if self.fail_every and self.calls % self.fail_every == 0:
            raise ConnectionError("outgoing queue full")
        self.messages.append((topic, json.loads(payload)))


@pytest.fixture(scope="module")
def model() -> edge_gru.Model:
    return edge_gru.load(DEFAULT_MODEL, backend="numba")


WORKER_ARGS = ("clock", "pool", "on_first_forecast", "warn_interval_s")


def make_worker(model: edge_gru.Model, pub: Collector, **kw: object) -> Worker:
    """A worker on ``s/{stream}/v`` and ``alt/{stream}``; keywords are [streams] settings or Worker arguments."""
    args = {k: kw.pop(k) for k in WORKER_ARGS if k in kw}
    fields: dict[str, object] = {"idle_timeout_s": None, **kw}
    settings = StreamsConfig(input=("s/{stream}/v", "alt/{stream}"), output="p/{stream}", **fields)  # type: ignore[arg-type]
    return Worker(model=model, publisher=pub, settings=settings, **args)  # type: ignore[arg-type]


def series(n_streams: int, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)[None, :]
    phase = rng.uniform(0, 6, size=(n_streams, 1))
    return 20 + 5 * np.sin(2 * np.pi * t / 24 + phase) + rng.normal(0, 0.3, size=(n_streams, n))


def accounted(worker: Worker) -> None:
    st = worker.stats
    assert st.received == st.published + sum(st.dropped.values()) + worker.queued


def test_batched_forecasts_equal_pool_update_for_many_streams(model: edge_gru.Model) -> None:
    n_streams, n = 40, 30
    x = series(n_streams, n)
    pub = Collector()
    worker = make_worker(model, pub, batch_size=37)  # batches cut across streams and time steps
    for t in range(n):
        for s in range(n_streams):
            topic = f"s/st{s}/v" if s % 2 else f"alt/st{s}"
            worker.submit(topic, json.dumps({"value": x[s, t], "ts": 1000.0 + 10 * t}).encode())
    while worker.process_available():
        pass
    ref = model.pool(1000)
    expected: dict[str, list[float]] = {}
    for t in range(n):
        out = ref.update([f"st{s}" for s in range(n_streams)], x[:, t], np.full(n_streams, 1000.0 + 10 * t))
        for s in range(n_streams):
            if np.isfinite(out[s]):
                expected.setdefault(f"st{s}", []).append(float(out[s]))
    got: dict[str, list[float]] = {}
    for topic, doc in pub.messages:
        assert topic == f"p/{doc['stream']}"
        assert doc["model"] == model.id and doc["backend"] == "numba"
        assert doc["forecast_ts"] == doc["ts"] + 10.0
        got.setdefault(doc["stream"], []).append(doc["value"])
    assert got == expected
    warmup = model.manifest.warmup
    assert worker.stats.published == n_streams * (n - warmup + 1)
    assert worker.stats.dropped == {"warmup": n_streams * (warmup - 1)}
    accounted(worker)


def test_bad_input_is_counted_and_leaves_other_streams_alone(model: edge_gru.Model) -> None:
    from tests.test_payload import BATTERY

    n = 25
    x = series(2, n, seed=1)
    pub = Collector()
    worker = make_worker(model, pub, batch_size=16)
    bad_sent = 0
    for t in range(n):
        worker.submit("s/good/v", json.dumps({"value": x[0, t], "ts": 100.0 + t}).encode())
        worker.submit("s/victim/v", json.dumps({"value": x[1, t], "ts": 100.0 + t}).encode())
        payload, _ = BATTERY[t % len(BATTERY)]
        worker.submit("s/victim/v", payload)  # garbage on the same stream as valid readings
        worker.submit("s/victim/v", json.dumps({"value": 1e6, "ts": 50.0}).encode())  # out of order
        worker.submit("s/victim/v", json.dumps({"value": 1e6, "ts": 100.0 + t}).encode())  # duplicate ts
        worker.submit("unknown/topic", b"1.0")
        bad_sent += 4
    while worker.process_available():
        pass
    ref = model.pool(10)
    for t in range(n):
        ref.update(["good", "victim"], x[:, t], [100.0 + t, 100.0 + t])
    expected = ref.update(["good", "victim"], [21.0, 22.0], [100.0 + n, 100.0 + n])
    worker.submit("s/good/v", f'{{"value": 21.0, "ts": {100 + n}}}'.encode())
    worker.submit("s/victim/v", f'{{"value": 22.0, "ts": {100 + n}}}'.encode())
    worker.process_available()
    last = {doc["stream"]: (doc["ts"], doc["value"]) for _, doc in pub.messages[-2:]}
    assert last == {"good": (100.0 + n, expected[0]), "victim": (100.0 + n, expected[1])}
    d = worker.stats.dropped
    assert d["out_of_order"] == n and d["duplicate"] == n and d["unknown_topic"] == n
    payload_drops = sum(v for k, v in d.items() if k not in ("out_of_order", "duplicate", "unknown_topic", "warmup"))
    assert payload_drops == n
    assert {"not_a_number", "empty", "too_large", "not_finite", "bad_utf8", "missing_field"} <= set(d)
    assert len(worker.pool) == 2  # garbage created no streams
    accounted(worker)


@pytest.mark.parametrize("policy", ["drop_oldest", "drop_newest"])
def test_full_queue_follows_its_policy(model: edge_gru.Model, policy: str) -> None:
    pub = Collector()
    worker = make_worker(model, pub, queue_size=20, queue_policy=policy, batch_size=1000)
    for t in range(50):
        worker.submit("s/a/v", json.dumps({"value": float(t), "ts": float(t)}).encode())
    assert worker.queued == 20 and worker.stats.dropped["queue_full"] == 30
    accounted(worker)
    worker.process_available()
    kept = [doc["ts"] for _, doc in pub.messages]
    warm = model.manifest.warmup - 1
    assert kept == (
        [float(t) for t in range(30 + warm, 50)] if policy == "drop_oldest" else [float(t) for t in range(warm, 20)]
    )
    accounted(worker)


def test_publish_failures_are_counted_not_raised(model: edge_gru.Model) -> None:
    pub = Collector(fail_every=3)
    worker = make_worker(model, pub)
    for t in range(40):
        worker.submit("s/a/v", f"{t % 7}".encode(), received=1000.0 + t)
    while worker.process_available():
        pass
    assert worker.stats.dropped["publish_failed"] == pub.calls // 3
    assert worker.stats.published == len(pub.messages) > 0
    accounted(worker)


def test_readings_without_ts_use_receive_time_in_the_payload(model: edge_gru.Model) -> None:
    clock = iter(np.arange(5000.0, 6000.0, 0.5))
    pub = Collector()
    worker = make_worker(model, pub, clock=lambda: float(next(clock)))
    for t in range(15):
        worker.submit("s/a/v", f"{20 + t % 3}".encode(), received=100.0 + t)
    worker.process_available()
    ref = model.pool(1)
    out = ref.update(["a"] * 15, [20 + t % 3 for t in range(15)])  # no timestamps: no gap rules
    assert [doc["value"] for _, doc in pub.messages] == [float(v) for v in out[np.isfinite(out)]]
    assert [doc["ts"] for _, doc in pub.messages] == [100.0 + t for t in range(15) if np.isfinite(out[t])]


def test_worker_thread_owns_the_pool(model: edge_gru.Model, tmp_path: Path) -> None:
    pub = Collector()
    worker = make_worker(model, pub)
    ran: list[str] = []
    worker.add_periodic("tick", 0.01, lambda: ran.append(threading.current_thread().name))
    worker.start()
    try:
        for t in range(30):
            worker.submit("s/a/v", json.dumps({"value": float(t % 5), "ts": float(t)}).encode())
        where = worker.call_soon(lambda: threading.current_thread().name).result(timeout=10)
        assert where == "edge-gru-worker"
        deadline = time.monotonic() + 10
        while not ran and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        worker.stop(drain=True)
    assert worker.queued == 0 and worker.stats.published == 30 - model.manifest.warmup + 1
    assert pub.threads == {"edge-gru-worker"} and ran and set(ran) == {"edge-gru-worker"}
    accounted(worker)


def test_replacing_the_model_keeps_state_only_for_the_same_bundle(model: edge_gru.Model) -> None:
    pub = Collector()
    worker = make_worker(model, pub)
    for t in range(12):
        worker.submit("s/a/v", json.dumps({"value": float(t), "ts": float(t)}).encode())
    worker.process_available()
    same = edge_gru.load(DEFAULT_MODEL, backend="numpy")
    worker.replace_model(same)
    assert len(worker.pool) == 1 and worker.model.backend_name == "numpy"
    worker.submit("s/a/v", b'{"value": 12, "ts": 12}')
    worker.process_available()
    ref = model.pool(1)
    expected = ref.update(["a"] * 13, np.arange(13.0), np.arange(13.0))[-1]
    assert pub.messages[-1][1]["backend"] == "numpy"
    assert pub.messages[-1][1]["value"] == pytest.approx(expected, rel=1e-5, abs=1e-5)


def test_resources_stay_bounded_under_stream_churn(model: edge_gru.Model) -> None:
    """New streams keep appearing (sensors replaced, ids with serial numbers): state, queue and memory stay bounded."""
    import tracemalloc

    clock = [0.0]
    pub = Collector()
    pub.publish = lambda topic, payload, *, qos=1, retain=False: None  # type: ignore[method-assign]
    worker = make_worker(
        model, pub, max_streams=200, idle_timeout_s=50.0, queue_size=1000, clock=lambda: clock[0], batch_size=256
    )
    announced: list[str] = []
    worker.on_first_forecast = announced.append

    def churn(round_: int) -> None:
        for step in range(20):  # 20 readings for each of 100 streams that exist only in this round
            clock[0] += 10.0
            for s in range(100):
                worker.submit(f"s/r{round_}-{s}/v", json.dumps({"value": float(step % 4), "ts": clock[0]}).encode())
            while worker.process_available():
                pass
            assert worker.queued == 0
        worker.expire_idle()

    for r in range(3):  # warm up allocator, caches and the pool's arrays
        churn(r)
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for r in range(3, 13):
        churn(r)
        assert len(worker.pool) <= 200
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    growth = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert growth < 256 * 1024, f"{growth} bytes retained after 20,000 readings from 1,000 short-lived streams"
    assert worker.pool.expired >= 1000 and len(worker._announced) <= 4 * 200
    assert worker.stats.dropped.get("stream_limit", 0) == 0  # idle streams made room
    accounted(worker)


def test_a_gap_restarts_the_stream_like_the_pool_does(model: edge_gru.Model) -> None:
    pub = Collector()
    worker = make_worker(model, pub)
    times = [60.0 * t for t in range(20)] + [60.0 * t + 3600 for t in range(20, 40)]  # an hour without readings
    values = [20 + (t % 6) * 0.5 for t in range(40)]
    for ts, v in zip(times, values, strict=True):
        worker.submit("s/g/v", json.dumps({"value": v, "ts": ts}).encode())
    while worker.process_available():
        pass
    ref = model.pool(1)
    expected = {
        ts: float(y) for ts, y in zip(times, ref.update(["g"] * 40, values, times), strict=True) if np.isfinite(y)
    }
    assert {doc["ts"]: doc["value"] for _, doc in pub.messages} == expected
    assert worker.snapshot()["gap_resets"] == ref.gap_resets == 1
    warm = model.manifest.warmup
    assert len(expected) == 2 * (20 - warm + 1)  # warm-up again after the gap


@pytest.mark.parametrize("mode", ["stateful", "window"])
def test_multi_feature_and_window_bundles_through_the_worker(tmp_path: Path, mode: str) -> None:
    """Fields per input feature (any order, extras ignored); window-mode bundles; the bundle period dates forecasts."""
    from tests.bundles import make_bundle

    bundle = make_bundle(tmp_path / mode, features=3, mode=mode, window=4, warmup=4, sample_period_s=60.0)
    model = edge_gru.load(bundle.path, backend="numba")
    pub = Collector()
    worker = make_worker(model, pub, batch_size=5)
    rng = np.random.default_rng(2)
    x = rng.normal(10, 2, size=(12, 2, 3))
    for t in range(12):
        for s in range(2):
            doc = {"f2": x[t, s, 2], "f0": x[t, s, 0], "rssi": -70, "f1": x[t, s, 1]}
            if s == 0:
                doc["ts"] = 1000.0 + 60 * t  # stream b0 has timestamps, b1 has none
            worker.submit(f"s/b{s}/v", json.dumps(doc).encode(), received=5000.0 + t)
    while worker.process_available():
        pass
    ref = model.pool(4)
    want0 = ref.update(["b0"] * 12, x[:, 0, :], 1000.0 + 60 * np.arange(12))
    want1 = ref.update(["b1"] * 12, x[:, 1, :])
    got = {s: [d for _, d in pub.messages if d["stream"] == s] for s in ("b0", "b1")}
    assert [d["value"] for d in got["b0"]] == [float(v) for v in want0[np.isfinite(want0)]]
    assert [d["value"] for d in got["b1"]] == [float(v) for v in want1[np.isfinite(want1)]]
    assert all(d["forecast_ts"] == d["ts"] + 60.0 for d in got["b0"] + got["b1"])
    assert [d["ts"] for d in got["b1"]] == [5000.0 + t for t in range(12) if np.isfinite(want1[t])]
    accounted(worker)


def test_a_stacked_network_with_a_horizon_publishes_every_step(tmp_path: Path) -> None:
    """GRU(8) > GRU(4) > Dense(3): each forecast carries the pool's three steps, dated a period apart."""
    from edge_gru.layers import DenseLayer, GRULayer, Network
    from tests.bundles import make_bundle

    net = Network(1, (GRULayer(8), GRULayer(4, reset_after=False), DenseLayer(3)))
    bundle = make_bundle(tmp_path / "h3", network=net, warmup=2, sample_period_s=60.0)
    model = edge_gru.load(bundle.path, backend="numba")
    pub = Collector()
    worker = make_worker(model, pub, batch_size=4)
    x = series(2, 10, seed=3)
    for t in range(10):
        for s in range(2):
            worker.submit(f"s/h{s}/v", json.dumps({"value": x[s, t], "ts": 1000.0 + 60 * t}).encode(), received=0.0)
    while worker.process_available():
        pass
    ref = model.pool(4)
    for s in range(2):
        want = ref.update_detailed([f"h{s}"] * 10, x[s], 1000.0 + 60 * np.arange(10))
        got = [d for _, d in pub.messages if d["stream"] == f"h{s}"]
        ok = np.flatnonzero(np.isfinite(want.forecasts))
        assert len(got) == len(ok) == 9
        assert want.values is not None
        for d, i in zip(got, ok, strict=True):
            assert [v["value"] for v in d["values"]] == want.values[i].tolist()
            assert d["values"][0]["value"] == d["value"]
            assert [v["forecast_ts"] for v in d["values"]] == [d["ts"] + 60.0 * k for k in (1, 2, 3)]
    accounted(worker)
