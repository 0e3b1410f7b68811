"""Every reading a real daemon receives is published or dropped with a named reason, exactly once.

A real ``edge-gru serve`` subprocess behind a real mosquitto gets a known mix of good and
bad readings; its stats topic must count each kind exactly, and the forecasts on the wire
must equal the stream pool fed the same valid readings.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import edge_gru
from edge_gru.harness import DEFAULT_MODEL, Broker, Daemon, Publisher, Watcher, accounted

WARMUP = edge_gru.load(DEFAULT_MODEL, backend="numpy").manifest.warmup


def reading(value: float, ts: float) -> bytes:
    return json.dumps({"value": value, "ts": ts}).encode()


Valid = dict[str, list[tuple[float, float | None]]]


def known_mix(n: int = WARMUP + 5) -> tuple[list[tuple[str, bytes]], Counter[str], Valid]:
    """(messages in send order, expected drops by reason, valid readings per stream for the reference pool)."""
    rng = np.random.default_rng(7)
    messages: list[tuple[str, bytes]] = []
    expected: Counter[str] = Counter()
    valid: Valid = {}
    ts_streams = ["kitchen", "hall", "attic", "cellar"]
    for k in range(n):
        for s, name in enumerate(ts_streams):
            v = float(20 + 3 * np.sin(k / 3 + s) + rng.normal(0, 0.2))
            ts = 1_700_000_000.0 + 60 * k
            messages.append((f"sensors/{name}/value", reading(v, ts)))
            valid.setdefault(name, []).append((v, ts))
        v = float(5 + rng.normal(0, 1))
        messages.append(("sensors/plain/value", repr(v).encode()))  # a plain number, no ts
        valid.setdefault("plain", []).append((v, None))
    expected["warmup"] += 5 * (WARMUP - 1)
    last = 1_700_000_000.0 + 60 * (n - 1)
    messages.append(("sensors/kitchen/value", reading(21.0, last)))
    expected["duplicate"] += 1
    messages.append(("sensors/hall/value", reading(21.0, last - 30)))
    expected["out_of_order"] += 1
    for extra in ("garage", "shed"):  # max_streams = 5: new streams are refused
        for k in range(3):
            messages.append((f"sensors/{extra}/value", reading(1.0, 1_700_000_000.0 + k)))
            expected["stream_limit"] += 1
    bad = [
        (b"hello", "not_a_number"),
        (b"hello", "not_a_number"),
        (b'{"value": 1,', "bad_json"),
        (b'{"value": 1,', "bad_json"),
        (b'{"value": 1,', "bad_json"),
        (b"\xff\xfe\x00\x81", "bad_utf8"),
        (b'{"temperature": 2}', "missing_field"),
        (b'{"value": null}', "not_a_number"),
        (b'{"value": NaN, "ts": 1700000000}', "not_finite"),
        (b"nan", "not_finite"),
        (b"-Infinity", "not_finite"),
        (b"1" * 20_000, "too_large"),
        (b"", "empty"),
        (b'{"value": 1, "ts": "yesterday"}', "bad_ts"),
        (b'{"value": 1, "ts": 1.7e12}', "bad_ts"),
        (b'{"value": 1, "ts": "2026-13-01T00:00:00Z"}', "bad_ts"),  # no 13th month (a time without a zone is UTC)
    ]
    for payload, reason in bad:
        # bad payloads on a known stream and on a stream never seen: neither creates a stream
        messages.append(("sensors/kitchen/value", payload))
        messages.append(("sensors/ghost/value", payload))
        expected[reason] += 2
    messages.append(("sensors//value", b"21.5"))  # matches the subscription, not the template
    expected["unknown_topic"] += 1
    return messages, expected, valid


def reference_forecasts(valid: Valid) -> dict[str, list[float]]:
    model = edge_gru.load(DEFAULT_MODEL, backend="numpy")
    out: dict[str, list[float]] = {}
    for name, rows in valid.items():
        pool = model.pool(10)
        for v, ts in rows:
            f = pool.update([name], [v], None if ts is None else [ts])[0]
            if np.isfinite(f):
                out.setdefault(name, []).append(float(f))
    return out


def test_every_reading_is_published_or_dropped_by_reason(private_broker: Broker, tmp_path: Path) -> None:
    messages, expected, valid = known_mix()
    daemon = Daemon(
        tmp_path / "daemon",
        broker=private_broker,
        sections={"streams": {"max_streams": 5}},
    ).start()
    watcher = Watcher(private_broker.host, private_broker.port, ["predictions/#", "edge-gru/#"])
    try:
        daemon.wait_ready()
        pub = Publisher(private_broker.host, private_broker.port)
        pub.publish_all(messages)
        pub.close()
        total = len(messages)
        snap = watcher.wait_stats(
            daemon,
            lambda s: s["received"] >= total and s["queued"] == 0,
            60,
            f"{total} readings received and processed",
        )
        expected_published = sum(len(v) for v in reference_forecasts(valid).values())
        assert snap["received"] == total
        assert accounted(snap), snap
        assert snap["published"] == expected_published == 5 * 6
        assert snap["dropped"] == dict(expected), (snap["dropped"], dict(expected))
        assert snap["streams"] == 5
        watcher.wait_for(lambda: len(watcher.on("predictions/#")) >= expected_published, 30, "forecasts on the wire")
        got: dict[str, list[float]] = {}
        for raw in watcher.on("predictions/#"):
            doc = json.loads(raw)
            got.setdefault(doc["stream"], []).append(doc["value"])
        ref = reference_forecasts(valid)
        assert set(got) == set(ref)
        for name in ref:
            np.testing.assert_allclose(got[name], ref[name], rtol=1e-5, err_msg=name)
    finally:
        rc = daemon.stop()
        watcher.close()
    assert rc == 0, daemon.log_text()[-3000:]
    stopped = daemon.events("stopped")[-1]
    assert f"received={total}" in stopped and f"published={expected_published}" in stopped


@pytest.mark.parametrize("policy", ["drop_oldest", "drop_newest"])
def test_a_burst_into_a_tiny_queue_is_counted_as_queue_full(
    private_broker: Broker, tmp_path: Path, policy: str
) -> None:
    """Readings the queue cannot hold are dropped as queue_full, and the rest add up exactly."""
    n_streams, n = 50, 60
    messages = [
        (f"sensors/q{s}/value", reading(float(20 + np.sin(k + s)), 1_700_000_000.0 + 60 * k))
        for k in range(n)
        for s in range(n_streams)
    ]
    daemon = Daemon(
        tmp_path / "daemon",
        broker=private_broker,
        sections={"streams": {"queue_size": 2, "batch_size": 1, "queue_policy": policy}},
    ).start()
    watcher = Watcher(private_broker.host, private_broker.port, ["predictions/#", "edge-gru/#"])
    try:
        daemon.wait_ready()
        pub = Publisher(private_broker.host, private_broker.port)
        pub.publish_all(messages)
        pub.close()
        snap = watcher.wait_stats(
            daemon,
            lambda s: s["received"] >= len(messages) and s["queued"] == 0,
            120,
            "the burst received and processed",
        )
        assert snap["received"] == len(messages)
        assert accounted(snap), snap
        assert snap["dropped"].get("queue_full", 0) > 0, snap
        assert set(snap["dropped"]) <= {"queue_full", "warmup"}, snap
        watcher.wait_for(
            lambda: len(watcher.on("predictions/#")) >= snap["published"], 30, "every counted forecast on the wire"
        )
        assert len(watcher.on("predictions/#")) == snap["published"]
    finally:
        assert daemon.stop() == 0
        watcher.close()


def test_huge_values_and_long_ids_are_named_drops_with_clean_logs(private_broker: Broker, tmp_path: Path) -> None:
    """1e308 on a warmed-up stream is ``out_of_range`` (no warm-up restart, no numpy warning on stderr);
    ids over ``max_id_bytes`` are ``id_too_long`` and get no discovery message (and no traceback)."""
    t0 = 1_700_000_000.0
    valid: Valid = {"wild": [], "z" * 256: []}
    messages: list[tuple[str, bytes]] = []
    k = 0

    def send(stream: str, value: float) -> None:
        nonlocal k
        k += 1
        messages.append((f"sensors/{stream}/value", reading(value, t0 + 60 * k)))
        valid[stream].append((value, t0 + 60 * k))

    for i in range(WARMUP + 3):
        send("wild", 20 + np.sin(i / 3))
    for j, spike in enumerate((1e308, -1e300, 1e16)):  # between two readings: no gap for the next one
        messages.append(("sensors/wild/value", reading(spike, t0 + 60 * k + 10 * (j + 1))))
    for i in range(5):  # forecasts again at once: the spikes left the stream's state alone
        send("wild", 20 + np.cos(i / 3))
    for i in range(WARMUP + 1):
        send("z" * 256, 5.0 + i % 3)  # exactly the limit: served
    too_long = ["x" * 257, "y" * 65_500]  # 65,500 bytes: once a 66 KB traceback line from discovery
    for sid in too_long:
        for i in range(3):
            messages.append((f"sensors/{sid}/value", reading(1.0 + i, t0 + i)))
    daemon = Daemon(tmp_path / "daemon", broker=private_broker, sections={"homeassistant": {"enabled": True}}).start()
    watcher = Watcher(private_broker.host, private_broker.port, ["predictions/#", "edge-gru/#", "homeassistant/#"])
    try:
        daemon.wait_ready()
        pub = Publisher(private_broker.host, private_broker.port)
        pub.publish_all(messages)
        pub.close()
        snap = watcher.wait_stats(
            daemon, lambda s: s["received"] >= len(messages) and s["queued"] == 0, 60, "all readings"
        )
        ref = reference_forecasts(valid)
        assert accounted(snap), snap
        assert snap["dropped"] == {"out_of_range": 3, "id_too_long": 6, "warmup": 2 * (WARMUP - 1)}, snap
        assert snap["published"] == sum(len(v) for v in ref.values()) == 4 + 5 + 2
        assert snap["streams"] == 2
        watcher.wait_for(lambda: len(watcher.on("predictions/#")) >= snap["published"], 30, "forecasts on the wire")
        got: dict[str, list[float]] = {}
        for raw in watcher.on("predictions/#"):
            doc = json.loads(raw)
            got.setdefault(doc["stream"], []).append(doc["value"])
        assert set(got) == set(ref)
        for name in ref:
            np.testing.assert_allclose(got[name], ref[name], rtol=1e-5)
        watcher.wait_for(lambda: len(watcher.on("homeassistant/#")) >= 2, 30, "discovery of the served streams")
        configs = [json.loads(p) for p in watcher.on("homeassistant/#")]
        assert sorted(c["name"] for c in configs) == sorted(f"{s} forecast" for s in ref)
    finally:
        rc = daemon.stop()
        watcher.close()
    assert rc == 0
    log = daemon.log_text()
    assert "Traceback" not in log and "RuntimeWarning" not in log, log[-3000:]
    lines = [line for line in log.splitlines() if line.strip()]
    assert all(line.startswith("ts=") for line in lines), [ln[:200] for ln in lines if not ln.startswith("ts=")]
    assert max(len(line) for line in lines) < 2000  # a drop names the stream, never with a 65 KB id
    assert daemon.events("dropped_reading") and any(
        "reason=out_of_range" in e for e in daemon.events("dropped_reading")
    )
