"""Security: the MQTT password never leaks, a world-readable config holding one is warned about,
and stream ids (attacker-controlled topic segments) never become file paths.

The daemon runs as a real subprocess against a real mosquitto that requires a password;
every log line and every message on ``#`` is searched for the secret.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import edge_gru
from edge_gru.daemon.checkpoint import Checkpointer
from edge_gru.daemon.config import load_config
from edge_gru.errors import ConfigError
from edge_gru.harness import DEFAULT_MODEL, Broker, Daemon, Publisher, Watcher, toml_text

WARMUP = edge_gru.load(DEFAULT_MODEL, backend="numpy").manifest.warmup
SECRET = "Tr0ub4dor-" + uuid.uuid4().hex  # unique, so any occurrence anywhere is a leak


@pytest.fixture
def auth_broker(tmp_path: Path) -> Iterator[Broker]:
    """A mosquitto that refuses anonymous clients: users 'edge' (SECRET) and 'watch' (watchpw)."""
    pwfile = tmp_path / "mosquitto-passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(pwfile), "edge", SECRET], check=True, capture_output=True)
    subprocess.run(["mosquitto_passwd", "-b", str(pwfile), "watch", "watchpw"], check=True, capture_output=True)
    os.chmod(pwfile, 0o644)
    broker = Broker(tmp_path / "mosquitto", extra_config=f"allow_anonymous false\npassword_file {pwfile}\n")
    broker.start()
    yield broker
    broker.stop()


WATCH = ("watch", "watchpw")


def readings(stream: str, n: int) -> list[tuple[str, bytes]]:
    return [
        (f"sensors/{stream}/value", b'{"value": %d, "ts": %d}' % (20 + k % 3, 1_700_000_000 + 60 * k)) for k in range(n)
    ]


@pytest.mark.parametrize("where", ["config_file", "environment", "password_file"])
def test_the_password_is_never_logged_or_published(auth_broker: Broker, tmp_path: Path, where: str) -> None:
    mqtt_section: dict[str, object] = {"username": "edge"}
    env: dict[str, str] = {}
    if where == "config_file":
        mqtt_section["password"] = SECRET
    elif where == "environment":
        env["EDGE_GRU_MQTT_PASSWORD"] = SECRET
    else:
        secret_file = tmp_path / "mqtt-password"
        secret_file.write_text(SECRET + "\n")
        secret_file.chmod(0o600)
        mqtt_section["password_file"] = str(secret_file)
    watcher = Watcher(auth_broker.host, auth_broker.port, ["#"], auth=WATCH)
    daemon = Daemon(
        tmp_path / "d",
        broker=auth_broker,
        sections={"mqtt": mqtt_section, "logging": {"level": "debug"}, "homeassistant": {"enabled": True}},
        env=env,
    ).start()
    try:
        daemon.wait_ready()
        pub = Publisher(auth_broker.host, auth_broker.port, auth=WATCH)
        pub.publish_all([*readings("kitchen", WARMUP + 3), ("sensors/kitchen/value", b"garbage")])
        pub.close()
        watcher.wait_stats(daemon, lambda s: s["published"] >= 4 and s["queued"] == 0, 30, "forecasts")
        check = subprocess.run(
            [sys.executable, "-m", "edge_gru.cli", "serve", "--config", str(daemon.config_path), "--check"],
            capture_output=True,
            text=True,
            env={**os.environ, **env},
            timeout=120,
        )
        assert check.returncode == 0, check.stderr
    finally:
        rc = daemon.stop()
        watcher.close()
    assert rc == 0
    log = daemon.log_text()
    assert "mqtt_connected" in log and "event=stopped" in log  # the log was captured at debug level
    assert SECRET not in log
    assert SECRET not in check.stdout + check.stderr
    assert "***" in check.stdout or where != "config_file"
    topics = [t for t, _, _ in watcher.messages]
    assert any(t.startswith("predictions/") for t in topics) and any(t.endswith("/stats") for t in topics)
    assert any(t.startswith("homeassistant/") for t in topics) and any(t.endswith("/status") for t in topics)
    for topic, payload, _ in watcher.messages:
        assert SECRET not in topic and SECRET.encode() not in payload, topic


def test_a_wrong_password_is_refused_without_echoing_it(auth_broker: Broker, tmp_path: Path) -> None:
    wrong = "wrong-" + uuid.uuid4().hex
    daemon = Daemon(
        tmp_path / "d",
        broker=auth_broker,
        sections={"mqtt": {"username": "edge", "password": wrong}, "logging": {"level": "debug"}},
    ).start()
    try:
        daemon.wait_log("mqtt_connect_refused", 30)
    finally:
        daemon.stop()
    log = daemon.log_text()
    assert wrong not in log
    assert "hint=" in daemon.events("mqtt_connect_refused")[0]


def test_config_errors_never_echo_the_password(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    for bad in ({"port": 0}, {"password_file": "/nonexistent"}, {"qos": 7}):
        path.write_text(toml_text({"mqtt": {"username": "u", "password": SECRET, **bad}}))
        with pytest.raises(ConfigError) as err:
            load_config(path, environ={})
        assert SECRET not in str(err.value) and SECRET not in repr(err.value)
    path.write_text(toml_text({"mqtt": {"username": "u", "password": SECRET}}))
    cfg = load_config(path, environ={})
    assert SECRET not in repr(cfg) and SECRET not in str(cfg)


@pytest.mark.parametrize(
    ("mode", "password", "warned"),
    [(0o644, True, True), (0o604, True, True), (0o640, True, False), (0o600, True, False), (0o644, False, False)],
)
def test_a_world_readable_config_holding_a_password_is_warned_about(
    broker: Broker, tmp_path: Path, mode: int, password: bool, warned: bool
) -> None:
    daemon = Daemon(
        tmp_path / "d",
        broker=broker,
        sections={"mqtt": {"username": "edge", "password": SECRET} if password else {}},
        config_mode=mode,
    ).start()
    try:
        daemon.wait_ready()
    finally:
        assert daemon.stop() == 0
    events = daemon.events("config_world_readable")
    assert bool(events) == warned, daemon.log_text()[-2000:]
    if warned:
        assert "level=warning" in events[0] and "chmod 600" in events[0] and SECRET not in events[0]


NASTY = ["..", ".", "...", "~", "%2e%2e%2fetc%2fx", "..\\..\\etc\\x", "etc", "passwd", "$HOME", "a b", "ü€😀", "-rf"]


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_stream_ids_from_topics_never_become_file_paths(broker: Broker, tmp_path: Path) -> None:
    """Topic segments like '..' or '~' are only data: they land in topics and the checkpoint, never as files."""
    root = tmp_path / "sandbox"
    workdir = root / "d"
    daemon = Daemon(
        workdir,
        broker=broker,
        sections={"homeassistant": {"enabled": True}, "state": {"checkpoint_interval_s": 0.2}},
    )
    before = files_under(root)
    tmp_before = set(os.listdir("/tmp"))
    daemon.start()
    watcher = Watcher(broker.host, broker.port, ["predictions/#", "homeassistant/#", "edge-gru/#"])
    try:
        daemon.wait_ready()
        pub = Publisher(broker.host, broker.port)
        pub.publish_all([m for s in NASTY for m in readings(s, WARMUP + 1)])
        pub.close()
        watcher.wait_stats(daemon, lambda s: s["streams"] == len(NASTY) and s["checkpoints"] >= 1, 30, "all streams in")
    finally:
        assert daemon.stop() == 0
        watcher.close()
    created = files_under(root) - before
    harness_log = str(daemon.log_path.relative_to(root))  # the harness's copy of the daemon's stdout
    allowed = {"d/state", f"d/state/{daemon.client_id}.checkpoint.npz", harness_log}
    assert {c for c in created if not c.startswith("d/numba-cache")} == allowed, created
    assert not (set(os.listdir("/tmp")) - tmp_before) & set(NASTY)
    forecasts = {t for t, _, _ in watcher.messages if t.startswith("predictions/")}
    assert forecasts == {f"predictions/{s}" for s in NASTY}
    model = edge_gru.load(DEFAULT_MODEL, backend="numpy")
    pool = model.pool(100)
    pool.load(daemon.checkpoint_path)
    assert sorted(pool.stream_ids) == sorted(NASTY)


def test_path_like_stream_ids_are_data_in_the_checkpoint(tmp_path: Path) -> None:
    """Through the Python API any string within max_id_bytes is a stream id; '../../etc/x' and '/abs' create no file."""
    ids = ["../../etc/x", "/tmp/edge-gru-owned", "a/b/c", "\x00nul", "x" * 65_536, "..", "C:\\Windows\\x"]
    state = tmp_path / "state"
    model = edge_gru.load(DEFAULT_MODEL, backend="numpy")
    pool = model.pool(100, max_id_bytes=70_000)
    for k in range(WARMUP + 1):
        pool.update(ids, np.full(len(ids), 20.0 + k % 2), np.full(len(ids), 1000.0 + 60 * k))
    cp = Checkpointer(state / "node.checkpoint.npz")
    assert cp.save(pool)
    assert files_under(tmp_path) == {"state", "state/node.checkpoint.npz"}
    assert not Path("/tmp/edge-gru-owned").exists() and not (tmp_path.parent.parent / "etc" / "x").exists()
    restored = model.pool(100, max_id_bytes=70_000)
    assert cp.restore(restored)
    assert sorted(restored.stream_ids) == sorted(ids)
