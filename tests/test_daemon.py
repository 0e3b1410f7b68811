"""``edge-gru serve`` as a real subprocess against a real mosquitto.

Forecasts are compared with ``pool.update`` of a separately loaded model fed the same
readings, never with stored numbers, so the tests hold for any bundle in models/default.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import edge_gru
from edge_gru import harness
from edge_gru.bundle import load_bundle, write_bundle
from edge_gru.harness import DEFAULT_MODEL, Broker, wait_until
from edge_gru.layers import NetworkWeights

pytestmark = pytest.mark.timeout(240)


class Client(harness.Watcher):
    """An MQTT 5 test client that collects what it is subscribed to and publishes readings."""

    def __init__(self, broker: Broker, subscribe: list[str]) -> None:
        super().__init__(broker.host, broker.port, subscribe, protocol="5")

    def publish(self, topic: str, payload: bytes | str, qos: int = 1) -> None:
        self.client.publish(topic, payload, qos=qos).wait_for_publish(5)

    def forecasts(self, prefix: str) -> list[dict[str, Any]]:
        return [json.loads(p) for p in self.on(f"{prefix}/out/+")]


class Daemon(harness.Daemon):
    """``edge-gru serve`` on the numba backend for one topic prefix; ``start`` waits for this run's ``ready``."""

    def __init__(
        self,
        tmp: Path,
        broker: Broker,
        prefix: str,
        *,
        model: Path = DEFAULT_MODEL,
        protocol: str = "5",
        checkpoint_interval_s: float = 3600,
        state_dir: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.prefix = prefix
        super().__init__(
            tmp,
            broker=broker,
            client_id=f"d-{prefix}",
            name=prefix,
            env=env,
            own_numba_cache=False,  # the one ref_model filled
            sections={
                "mqtt": {"protocol": protocol, "keepalive_s": 5, "reconnect_min_s": 0.5, "reconnect_max_s": 2},
                "model": {"path": str(model), "backend": "numba"},
                "streams": {"input": [f"{prefix}/in/{{stream}}/value"], "output": f"{prefix}/out/{{stream}}"},
                "state": {"dir": str(state_dir or tmp / "state"), "checkpoint_interval_s": checkpoint_interval_s},
                "stats": {"interval_s": 0.3},
                "logging": {"level": "debug", "warn_interval_s": 0.5},
            },
        )

    def start(self, *, ready: bool = True) -> Daemon:
        super().start()
        if ready:
            self.wait_log("ready", 90, this_run=True)
        return self


def readings(stream: str, n: int, *, start: int = 0, seed: int = 0) -> list[tuple[float, float]]:
    rng = np.random.default_rng(abs(hash(stream)) % 2**32 + seed)
    t = np.arange(start, start + n)
    v = 20 + 4 * np.sin(2 * np.pi * t / 24) + rng.normal(0, 0.2, n)
    return [(1_700_000_000.0 + 60.0 * ti, float(vi)) for ti, vi in zip(t, v, strict=True)]


def payload(ts: float, value: float) -> bytes:
    return json.dumps({"value": value, "ts": ts}).encode()


def reference(model: edge_gru.Model, sent: dict[str, list[tuple[float, float]]]) -> dict[str, dict[float, float]]:
    """pool.update fed every stream's readings in order -> {stream: {ts: forecast}}."""
    pool = model.pool(10_000)
    out: dict[str, dict[float, float]] = {}
    for stream, rows in sent.items():
        for ts, value in rows:
            y = pool.update([stream], [value], [ts])[0]
            if np.isfinite(y):
                out.setdefault(stream, {})[ts] = float(y)
    return out


def by_stream(docs: list[dict[str, Any]]) -> dict[str, dict[float, float]]:
    out: dict[str, dict[float, float]] = {}
    for d in docs:
        out.setdefault(d["stream"], {})[d["ts"]] = d["value"]
    return out


@pytest.fixture(scope="module")
def ref_model() -> edge_gru.Model:
    """The reference; loading it first also fills numba's cache, so the daemons start in seconds."""
    model = edge_gru.load(DEFAULT_MODEL, backend="numba")
    model.predict(np.zeros((1, max(model.manifest.window, 1), model.manifest.input_features)))
    model.pool(1).update(["warm"], [0.0])
    return model


@pytest.fixture(scope="module")
def shared(
    broker: Broker, tmp_path_factory: pytest.TempPathFactory, ref_model: edge_gru.Model
) -> Iterator[tuple[Daemon, Client]]:
    """One daemon for the stateless checks; its state dir cannot be created, which must not stop it."""
    tmp = tmp_path_factory.mktemp("daemon")
    blocker = tmp / "not-a-dir"
    blocker.write_text("a file where the state dir should be")
    prefix = f"shared{os.getpid()}"
    daemon = Daemon(tmp, broker, prefix, checkpoint_interval_s=0.2, state_dir=blocker / "state")
    client = Client(broker, [f"{prefix}/out/+", daemon.stats_topic, daemon.status_topic])
    try:
        daemon.start()
        yield daemon, client
        daemon.signal(signal.SIGTERM)
        assert daemon.wait() == 0
    finally:
        daemon.stop()
        client.close()


def latest_stats(client: Client, daemon: Daemon) -> dict[str, Any]:
    """The newest stats message; waits for the first one when the daemon has only just started."""
    raw = wait_until(lambda: client.last(daemon.stats_topic), 10, "a first stats message")
    return json.loads(raw)


def test_forecasts_for_many_streams_equal_pool_update(shared: tuple[Daemon, Client], ref_model: edge_gru.Model) -> None:
    daemon, client = shared
    sent = {f"s{i}": readings(f"s{i}", 20) for i in range(60)}
    for t in range(20):
        for stream, rows in sent.items():
            client.client.publish(f"{daemon.prefix}/in/{stream}/value", payload(*rows[t]), qos=1)
    expected = reference(ref_model, sent)
    n_expected = sum(len(v) for v in expected.values())
    wait_until(
        lambda: len([d for d in client.forecasts(daemon.prefix) if d["stream"] in sent]) >= n_expected,
        30,
        f"{n_expected} forecasts",
    )
    docs = [d for d in client.forecasts(daemon.prefix) if d["stream"] in sent]
    assert by_stream(docs) == expected
    for d in docs:
        assert d["model"] == ref_model.id and d["backend"] == "numba"
        assert d["forecast_ts"] == d["ts"] + 60.0
    assert client.last(daemon.status_topic) == b"online"
    # the first stats message that counts every forecast covers the interval they were made in: it has latencies
    # (a later one may cover an idle interval, whose quantiles are None)
    stats = wait_until(
        lambda: next((s for s in map(json.loads, client.on(daemon.stats_topic)) if s["published"] >= n_expected), None),
        10,
        "stats counting every forecast",
    )
    assert stats["tensorflow_loaded"] is False  # the daemon process never imports TensorFlow
    assert stats["streams"] >= 60 and stats["rss_mib"] > 0 and stats["latency"]["p99_ms"] is not None
    # the state dir is a file: checkpoints fail, are logged once, and serving goes on
    assert daemon.log_text().count("event=checkpoint_failed") == 1 and stats["checkpoint_failures"] >= 1


def test_bad_payload_battery_is_counted_and_harmless(shared: tuple[Daemon, Client], ref_model: edge_gru.Model) -> None:
    from tests.test_payload import BATTERY

    daemon, client = shared
    before = latest_stats(client, daemon)
    good = readings("good", 15)
    victim = readings("victim", 15, seed=3)
    bad = 0
    for t in range(15):
        client.publish(f"{daemon.prefix}/in/good/value", payload(*good[t]))
        client.publish(f"{daemon.prefix}/in/victim/value", payload(*victim[t]))
        for raw, _ in BATTERY[t * 2 : t * 2 + 2]:
            client.publish(f"{daemon.prefix}/in/victim/value", raw)
            bad += 1
        client.publish(f"{daemon.prefix}/in/victim/value", payload(victim[t][0] - 3600, 1e9))  # out of order
        bad += 1
    expected = reference(ref_model, {"good": good, "victim": victim})
    n = sum(len(v) for v in expected.values())
    wait_until(
        lambda: len([d for d in client.forecasts(daemon.prefix) if d["stream"] in expected]) >= n, 30, "forecasts"
    )
    docs = [d for d in client.forecasts(daemon.prefix) if d["stream"] in expected]
    assert by_stream(docs) == expected
    assert daemon.proc is not None and daemon.proc.poll() is None
    want = before["received"] + 15 * 2 + bad
    after = wait_until(lambda: (s := latest_stats(client, daemon))["received"] >= want and s, 10, "stats")
    dropped = {k: v - before["dropped"].get(k, 0) for k, v in after["dropped"].items()}
    assert dropped.get("out_of_order") == 15
    payload_reasons = {
        "empty",
        "too_large",
        "not_finite",
        "not_a_number",
        "missing_field",
        "bad_ts",
        "bad_utf8",
        "bad_json",
    }
    assert sum(v for k, v in dropped.items() if k in payload_reasons) == bad - 15
    assert after["received"] == after["published"] + after["dropped_total"] + after["queued"]
    log = daemon.log_text()
    assert "event=dropped_reading" in log and f"topic={daemon.prefix}/in/victim/value" in log
    assert log.count("reason=too_large") <= 3  # rate limited, not one line per message


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_broker_restart_reconnects_and_resubscribes(
    private_broker: Broker, tmp_path: Path, topic_prefix: str, ref_model: edge_gru.Model, protocol: str
) -> None:
    prefix = topic_prefix
    daemon = Daemon(tmp_path, private_broker, prefix, protocol=protocol).start()
    client = Client(private_broker, [f"{prefix}/out/+"])
    try:
        sent = {"a": readings("a", 24)}
        for row in sent["a"][:12]:
            client.publish(f"{prefix}/in/a/value", payload(*row))
        wait_until(lambda: len(client.forecasts(prefix)) >= 3, 20, "forecasts before the restart")
        client.close()
        private_broker.stop()  # mosquitto saves its sessions on exit
        daemon.wait_log("mqtt_connection_lost")
        private_broker.start()
        client = Client(private_broker, [f"{prefix}/out/+"])
        for row in sent["a"][12:]:  # published as soon as the broker is back, maybe before the daemon is
            client.publish(f"{prefix}/in/a/value", payload(*row))
        daemon.wait_log("mqtt_subscribed", count=2)
        expected = {ts: v for ts, v in reference(ref_model, sent)["a"].items() if ts >= sent["a"][12][0]}
        wait_until(lambda: len(client.forecasts(prefix)) >= len(expected), 20, "forecasts after the restart")
        assert by_stream(client.forecasts(prefix))["a"] == expected
        assert "session_present=true" in daemon.log_text().split("event=mqtt_connection_lost")[1]
        daemon.signal(signal.SIGTERM)
        assert daemon.wait() == 0
    finally:
        daemon.stop()
        client.close()


def test_sigterm_checkpoints_goes_offline_and_misses_nothing_while_down(
    broker: Broker, tmp_path: Path, topic_prefix: str, ref_model: edge_gru.Model
) -> None:
    daemon = Daemon(tmp_path, broker, topic_prefix).start()  # no periodic checkpoint within the test
    client = Client(broker, [f"{topic_prefix}/out/+", daemon.status_topic])
    try:
        sent = {s: readings(s, 30) for s in ("x", "y")}
        for t in range(15):
            for s in sent:
                client.publish(f"{topic_prefix}/in/{s}/value", payload(*sent[s][t]))
        wait_until(lambda: len(client.forecasts(topic_prefix)) >= 12, 20, "forecasts")
        daemon.signal(signal.SIGTERM)
        assert daemon.wait() == 0
        assert daemon.checkpoint_path.exists()
        wait_until(lambda: client.last(daemon.status_topic) == b"offline", 5, "status offline")
        for t in range(15, 30):  # the daemon is down: the broker keeps these in its session
            for s in sent:
                client.publish(f"{topic_prefix}/in/{s}/value", payload(*sent[s][t]))
        daemon.start()
        assert "event=checkpoint_restored" in daemon.log_text() and "streams=2" in daemon.log_text()
        expected = reference(ref_model, sent)
        n = sum(len(v) for v in expected.values())
        wait_until(lambda: len(client.forecasts(topic_prefix)) >= n, 20, f"{n} forecasts")
        assert by_stream(client.forecasts(topic_prefix)) == expected
        wait_until(lambda: client.last(daemon.status_topic) == b"online", 5, "status online")
    finally:
        daemon.stop()
        client.close()


def test_sigkill_restart_restores_the_last_checkpoint(
    broker: Broker, tmp_path: Path, topic_prefix: str, ref_model: edge_gru.Model
) -> None:
    daemon = Daemon(tmp_path, broker, topic_prefix, checkpoint_interval_s=0.2).start()
    client = Client(broker, [f"{topic_prefix}/out/+", daemon.status_topic])
    try:
        sent = {"k": readings("k", 25)}
        for row in sent["k"][:15]:
            client.publish(f"{topic_prefix}/in/k/value", payload(*row))
        wait_until(lambda: len(client.forecasts(topic_prefix)) >= 15 - 9, 20, "forecasts")

        last_ts = sent["k"][14][0]

        def saved_through_last_reading() -> bool:
            if not daemon.checkpoint_path.exists():
                return False
            with np.load(daemon.checkpoint_path, allow_pickle=False) as saved:  # replaced atomically
                return float(saved["last_ts"].max()) == last_ts

        wait_until(saved_through_last_reading, 10, "a checkpoint holding the last reading")
        daemon.signal(signal.SIGKILL)
        daemon.wait()
        wait_until(lambda: client.last(daemon.status_topic) == b"offline", 15, "the last will")
        daemon.start()
        assert "event=checkpoint_restored" in daemon.log_text()
        for row in sent["k"][15:]:
            client.publish(f"{topic_prefix}/in/k/value", payload(*row))
        expected = reference(ref_model, sent)["k"]
        wait_until(lambda: len(client.forecasts(topic_prefix)) >= len(expected), 20, "forecasts after the restart")
        got = by_stream(client.forecasts(topic_prefix))["k"]
        assert got == expected  # the first reading after the restart forecasts at once, from the restored state
    finally:
        daemon.stop()
        client.close()


def perturbed_bundle(out: Path) -> str:
    """A valid bundle with other weights (so another id) built from the default one."""
    b = load_bundle(DEFAULT_MODEL)
    w = b.weights
    arrays = w.as_dict()
    arrays["layers.1.bias"] = arrays["layers.1.bias"] + 0.5
    new = NetworkWeights.from_mapping(b.manifest.network, arrays)
    return write_bundle(out, b.manifest, new).id


def test_sighup_reloads_a_good_bundle_and_refuses_a_corrupt_one(
    broker: Broker, tmp_path: Path, topic_prefix: str, ref_model: edge_gru.Model
) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(DEFAULT_MODEL, bundle)
    daemon = Daemon(tmp_path, broker, topic_prefix, model=bundle).start()
    client = Client(broker, [f"{topic_prefix}/out/+"])
    try:
        rows = readings("h", 40)

        def feed(lo: int, hi: int) -> None:
            for row in rows[lo:hi]:
                client.publish(f"{topic_prefix}/in/h/value", payload(*row))

        feed(0, 12)
        wait_until(lambda: len(client.forecasts(topic_prefix)) >= 3, 20, "forecasts")
        (bundle / "weights.npz").write_bytes(b"corrupt")
        daemon.signal(signal.SIGHUP)
        daemon.wait_log("reload_refused")
        assert "weights.npz" in daemon.log_text().split("event=reload_refused")[1].splitlines()[0]
        feed(12, 14)
        wait_until(lambda: len(client.forecasts(topic_prefix)) >= 5, 20, "forecasts from the old model")
        assert {d["model"] for d in client.forecasts(topic_prefix)} == {ref_model.id}
        assert by_stream(client.forecasts(topic_prefix))["h"] == reference(ref_model, {"h": rows[:14]})["h"]
        shutil.rmtree(bundle)
        new_id = perturbed_bundle(bundle)
        assert new_id != ref_model.id
        daemon.signal(signal.SIGHUP)
        daemon.wait_log("model_reloaded")
        feed(14, 40)
        new_model = edge_gru.load(bundle, backend="numba")
        expected = reference(new_model, {"h": rows[14:]})["h"]  # another bundle: the streams start afresh on it

        def new_docs() -> list[dict[str, Any]]:
            return [d for d in client.forecasts(topic_prefix) if d["model"] == new_id]

        wait_until(lambda: len(new_docs()) >= len(expected), 20, "forecasts of the new model")
        assert by_stream(new_docs())["h"] == expected
        daemon.signal(signal.SIGTERM)
        assert daemon.wait() == 0
    finally:
        daemon.stop()
        client.close()


def test_systemd_notify_ready_watchdog_status_stopping(
    broker: Broker, tmp_path: Path, topic_prefix: str, ref_model: edge_gru.Model
) -> None:
    notify = harness.NotifySocket()
    daemon = Daemon(tmp_path, broker, topic_prefix, env={"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "600000"})
    try:
        daemon.start()
        wait_until(lambda: sum("WATCHDOG=1" in m for m in notify.texts()) >= 4, 10, "watchdog pings")
        daemon.signal(signal.SIGHUP)
        daemon.wait_log("model_reloaded")
        daemon.signal(signal.SIGTERM)
        assert daemon.wait() == 0
    finally:
        daemon.stop()
        time.sleep(0.3)
        notify.close()
    got = list(notify.messages)
    messages = [m for _, m in got]
    ready = next(i for i, m in enumerate(messages) if "READY=1" in m)
    assert "event=mqtt_subscribed" in daemon.log_text()  # READY came after connect + subscribe
    assert any(m.startswith("STATUS=") for m in messages[:ready]), "a STATUS= while connecting"
    reloading = next(i for i, m in enumerate(messages) if m.startswith("RELOADING=1"))
    assert "MONOTONIC_USEC=" in messages[reloading] and any("READY=1" in m for m in messages[reloading + 1 :])
    assert messages[-1] == "STOPPING=1" or "STOPPING=1" in messages
    pings = [t for t, m in got if m == "WATCHDOG=1"]
    gaps = np.diff(pings)
    assert gaps.max() < 0.6, f"watchdog gaps {gaps}"  # within WATCHDOG_USEC, sent from the worker loop


def test_sigterm_mid_burst_loses_and_repeats_nothing(
    broker: Broker, tmp_path: Path, topic_prefix: str, ref_model: edge_gru.Model
) -> None:
    """Readings that arrive while the daemon stops are not acknowledged, so the broker hands them to the next run."""
    daemon = Daemon(tmp_path, broker, topic_prefix).start()
    client = Client(broker, [f"{topic_prefix}/out/+"])
    try:
        sent = {s: readings(s, 150) for s in ("p", "q", "r")}
        for t in range(150):
            if t == 60:
                wait_until(lambda: len(client.forecasts(topic_prefix)) >= 3 * 51, 20, "the first forecasts")
            if t == 70:
                daemon.signal(signal.SIGTERM)  # stop while readings keep coming
            for s in sent:
                client.publish(f"{topic_prefix}/in/{s}/value", payload(*sent[s][t]))
        assert daemon.wait() == 0
        first_run = daemon.log_text().split("event=stopped ")[1].split()[0]
        assert 3 * 60 < int(first_run.removeprefix("received=")) < 3 * 150  # it did stop mid-burst
        daemon.start()
        expected = reference(ref_model, sent)
        n = sum(len(v) for v in expected.values())
        wait_until(lambda: len(client.forecasts(topic_prefix)) >= n, 30, f"{n} forecasts")
        time.sleep(0.5)
        docs = client.forecasts(topic_prefix)
        assert len(docs) == n  # none twice
        assert by_stream(docs) == expected  # none lost, and the state carried across the restart
    finally:
        daemon.stop()
        client.close()
