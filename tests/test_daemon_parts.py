"""Daemon parts in-process: sd_notify on real sockets, the watchdog from the worker, checkpoints, discovery."""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

import edge_gru
from edge_gru.bundle import load_bundle, write_bundle
from edge_gru.daemon.checkpoint import Checkpointer
from edge_gru.daemon.config import StreamsConfig, load_config
from edge_gru.daemon.discovery import Discovery
from edge_gru.daemon.notify import Notifier
from edge_gru.daemon.worker import Worker
from edge_gru.harness import Broker
from edge_gru.layers import NetworkWeights
from tests.conftest import DEFAULT_MODEL
from tests.test_daemon_worker import Collector


@pytest.fixture(scope="module")
def model() -> edge_gru.Model:
    return edge_gru.load(DEFAULT_MODEL, backend="numpy")


def test_notify_reaches_an_abstract_socket() -> None:
    name = f"edge-gru-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)
        n = Notifier.from_env({"NOTIFY_SOCKET": "@" + name})
        assert n.ready("serving 3 streams")
        assert sock.recv(256) == b"READY=1\nSTATUS=serving 3 streams"
        assert n.stopping() and sock.recv(256) == b"STOPPING=1"
        n.close()


def test_notify_is_a_no_op_outside_systemd_and_honours_watchdog_pid(tmp_path: Path) -> None:
    off = Notifier.from_env({})
    assert not off.enabled and not off.ready() and not off.watchdog()
    other = Notifier.from_env({"NOTIFY_SOCKET": str(tmp_path / "s"), "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"})
    assert other.watchdog_interval_s is None  # the watchdog is meant for another process
    mine = Notifier.from_env(
        {"NOTIFY_SOCKET": str(tmp_path / "s"), "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid())}
    )
    assert mine.watchdog_interval_s == 0.5
    assert not mine.send("STATUS=x")  # nobody listens: logged, not raised


def test_a_stuck_worker_stops_the_watchdog(model: edge_gru.Model, tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(0.05)
        notifier = Notifier(str(path), watchdog_usec=200_000)
        worker = Worker(model=model, publisher=Collector(), settings=StreamsConfig(input=("a/{stream}",)))
        worker.add_periodic("watchdog", notifier.watchdog_interval_s or 0.1, lambda: notifier.watchdog(force=True))
        worker.start()
        pings: list[float] = []

        def collect(seconds: float) -> None:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                try:
                    if sock.recv(64) == b"WATCHDOG=1":
                        pings.append(time.monotonic())
                except TimeoutError:
                    pass

        try:
            collect(0.6)
            assert len(pings) >= 3
            stuck_from = time.monotonic()
            blocked = worker.call_soon(lambda: time.sleep(1.0))  # the worker hangs in a batch
            collect(0.8)
            during = [t for t in pings if stuck_from + 0.05 < t < stuck_from + 0.8]
            assert during == []  # systemd would now restart the service
            blocked.result(timeout=5)
            n = len(pings)
            collect(0.5)
            assert len(pings) > n  # and it recovers
        finally:
            worker.stop()
            notifier.close()


def test_checkpoint_of_another_bundle_is_discarded_with_a_warning(
    model: edge_gru.Model, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    b = load_bundle(DEFAULT_MODEL)
    arrays = b.weights.as_dict()
    arrays["layers.1.bias"] = arrays["layers.1.bias"] + 1.0
    other = edge_gru.load(
        write_bundle(tmp_path / "other", b.manifest, NetworkWeights.from_mapping(b.manifest.network, arrays)).path,
        "numpy",
    )
    assert other.id != model.id
    ckpt = Checkpointer(tmp_path / "state" / "node.checkpoint.npz")
    pool = other.pool(10)
    pool.update(["a", "b"], [1.0, 2.0], [10.0, 10.0])
    assert ckpt.save(pool) and ckpt.path.exists()
    fresh = model.pool(10)
    with caplog.at_level(logging.WARNING):
        assert not ckpt.restore(fresh)
    assert len(fresh) == 0 and "checkpoint_discarded" in caplog.text
    assert not ckpt.path.exists() and ckpt.path.with_name(ckpt.path.name + ".discarded").exists()
    same = other.pool(10)
    assert not ckpt.restore(same)  # nothing left to restore
    assert ckpt.save(pool) and ckpt.restore(same) and sorted(same.stream_ids) == ["a", "b"]
    x = np.array([3.0, 4.0])
    assert np.array_equal(
        same.update(["a", "b"], x, [11.0, 11.0]), pool.update(["a", "b"], x, [11.0, 11.0]), equal_nan=True
    )


def test_unwritable_state_dir_is_a_warning_not_a_crash(model: edge_gru.Model, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    ckpt = Checkpointer(blocker / "state" / "c.npz")
    pool = model.pool(4)
    assert not ckpt.save(pool) and not ckpt.save(pool)
    assert ckpt.failures == 2


def test_home_assistant_discovery_once_per_stream(model: edge_gru.Model, tmp_path: Path) -> None:
    cfg_path = tmp_path / "c.toml"
    cfg_path.write_text(
        "[mqtt]\nclient_id = 'pi-4'\n[streams]\noutput = 'pred/{stream}'\n"
        "[homeassistant]\nenabled = true\nunit_of_measurement = '°C'\ndevice_class = 'temperature'\n"
    )
    cfg = load_config(cfg_path, environ={})
    pub = Collector()
    discovery = Discovery(cfg, pub, version="1.2")
    worker = Worker(
        model=model,
        publisher=pub,
        settings=StreamsConfig(input=("s/{stream}",), output="pred/{stream}"),
        on_first_forecast=discovery.announce,
    )
    for t in range(15):
        for s in ("living.room", "attic"):
            worker.submit(f"s/{s}", json.dumps({"value": 20 + t % 3, "ts": t}).encode())
    while worker.process_available():
        pass
    configs = [(t, d) for t, d in pub.messages if t.startswith("homeassistant/")]
    assert [t for t, _ in configs] == [
        "homeassistant/sensor/pi-4/living_room_forecast/config",
        "homeassistant/sensor/pi-4/attic_forecast/config",
    ]
    doc = configs[0][1]
    assert doc["state_topic"] == "pred/living.room" and doc["availability_topic"] == "edge-gru/pi-4/status"
    assert doc["value_template"] == "{{ value_json.value }}" and doc["unit_of_measurement"] == "°C"
    assert doc["unique_id"] == "pi-4_living_room_forecast" and doc["device"]["sw_version"] == "1.2"
    first_forecast = next(i for i, (t, _) in enumerate(pub.messages) if t == "pred/living.room")
    assert pub.messages.index(configs[0]) == first_forecast + 1


def test_worker_call_soon_propagates_errors(model: edge_gru.Model) -> None:
    worker = Worker(model=model, publisher=Collector(), settings=StreamsConfig(input=("a/{stream}",)))
    worker.start()
    try:
        fut = worker.call_soon(lambda: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            fut.result(timeout=5)
        assert worker.call_soon(lambda: threading.current_thread().name).result(timeout=5) == "edge-gru-worker"
    finally:
        worker.stop()


def test_two_daemons_share_one_subscription(broker: Broker, tmp_path: Path, topic_prefix: str) -> None:
    """MQTT 5 shared subscription: each reading reaches exactly one of the daemons in the group."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from edge_gru.daemon.service import Service

    services = []
    for i in range(2):
        path = tmp_path / f"d{i}.toml"
        path.write_text(
            f"[mqtt]\nhost = '{broker.host}'\nport = {broker.port}\nclient_id = '{topic_prefix}-{i}'\n"
            f"[streams]\ninput = ['$share/edge/{topic_prefix}/{{stream}}']\noutput = '{topic_prefix}-out/{{stream}}'\n"
            f"[state]\ndir = '{tmp_path}'\n[stats]\ninterval_s = 0\n"
        )
        services.append(Service(load_config(path, environ={}), model=edge_gru.load(DEFAULT_MODEL, backend="numpy")))
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    pub.connect(broker.host, broker.port)
    pub.loop_start()
    try:
        for s in services:
            s.start()
        for s in services:
            assert s.mqtt.ready.wait(20)
        for t in range(40):
            pub.publish(f"{topic_prefix}/s{t % 4}", json.dumps({"value": t % 5, "ts": t}), qos=1).wait_for_publish(5)
        deadline = time.monotonic() + 20
        while sum(s.worker.stats.received for s in services) < 40 and time.monotonic() < deadline:
            time.sleep(0.05)
        received = [s.worker.stats.received for s in services]
        assert sum(received) == 40 and min(received) > 0
    finally:
        for s in services:
            s.shutdown(timeout=2)
        pub.loop_stop()


def test_the_serve_process_cannot_import_tensorflow() -> None:
    """``serve`` blocks TensorFlow for its process; LiteRT still loads for the tflite backends."""
    import subprocess
    import sys

    code = (
        "from edge_gru.daemon.service import forbid_tensorflow\n"
        "forbid_tensorflow()\n"
        "try:\n    import tensorflow\nexcept ImportError:\n    print('blocked')\n"
        "from edge_gru.backends.tflite_backend import interpreter_class\n"
        "print(interpreter_class()[1])\n"
        "import sys; print('tensorflow' in sys.modules and sys.modules['tensorflow'] is not None)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == ["blocked", "ai_edge_litert", "False"]


def test_an_idle_daemon_does_not_rewrite_its_checkpoint(tmp_path: Path, model: edge_gru.Model) -> None:
    from edge_gru.daemon.service import Service

    path = tmp_path / "c.toml"
    path.write_text(f"[mqtt]\nclient_id = 'idle'\n[streams]\ninput = ['s/{{stream}}']\n[state]\ndir = '{tmp_path}'\n")
    service = Service(load_config(path, environ={}), model=model)  # not started: no broker needed
    service.worker.submit("s/a", b"1.5")
    service.worker.process_available()
    assert service.checkpoint() and service.checkpointer.saves == 1
    mtime = service.checkpointer.path.stat().st_mtime_ns
    assert service.checkpoint() and service.checkpoint() and service.checkpointer.saves == 1
    assert service.checkpointer.path.stat().st_mtime_ns == mtime
    service.worker.submit("s/a", b"1.6")
    service.worker.process_available()
    assert service.checkpoint() and service.checkpointer.saves == 2
    assert service.checkpoint(force=True) and service.checkpointer.saves == 3


def test_discovery_of_an_id_mqtt_cannot_carry_is_one_log_line(
    model: edge_gru.Model, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A 65,500-byte id (allowed by a raised max_id_bytes) gets no config message and no traceback."""
    cfg_path = tmp_path / "c.toml"
    cfg_path.write_text('[mqtt]\nclient_id = "pi"\n[homeassistant]\nenabled = true\n[streams]\nmax_id_bytes = 65535\n')
    cfg = load_config(cfg_path, environ={})
    pub = Collector()
    worker = Worker(
        model=model,
        publisher=pub,
        settings=StreamsConfig(input=("s/{stream}",), max_id_bytes=65_535),
        on_first_forecast=Discovery(cfg, pub).announce,
    )
    huge = "h" * 65_500
    with caplog.at_level("WARNING"):
        for t in range(model.manifest.warmup + 1):
            worker.submit(f"s/{huge}", json.dumps({"value": 20 + t % 3, "ts": t}).encode())
        while worker.process_available():
            pass
    assert worker.stats.published == 2
    assert not [t for t, _ in pub.messages if t.startswith("homeassistant/")]
    assert [r.getMessage() for r in caplog.records] == ["discovery_skipped"]
    assert all(r.exc_info is None for r in caplog.records)
