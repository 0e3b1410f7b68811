"""A real ``edge-gru serve`` subprocess and an MQTT watcher, for reliability and security tests.

The daemon runs exactly as systemd runs it (``python -m edge_gru.cli serve --config FILE``)
against a real mosquitto; its log lines are captured through a pipe (so an RLIMIT_FSIZE
on the daemon never limits its own log), and a watcher client records every message on
the topics a test cares about.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge_gru import procstat

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = ROOT / "models" / "default"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def toml_text(sections: dict[str, dict[str, Any]]) -> str:
    """A TOML document of flat sections (all the daemon's config needs)."""
    lines = []
    for name, table in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in table.items() if value is not None]
        lines.append("")
    return "\n".join(lines)


class Watcher:
    """An MQTT client that records (topic, payload, retain) of every message on its filters."""

    def __init__(
        self,
        host: str,
        port: int,
        filters: list[str],
        *,
        client_id: str | None = None,
        auth: tuple[str, str] | None = None,
    ) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id or f"watch-{uuid.uuid4().hex[:8]}")
        if auth is not None:
            self.client.username_pw_set(*auth)
        self._subscribed = threading.Event()
        self._filters = filters

        def on_connect(client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
            client.subscribe([(f, 1) for f in self._filters])

        def on_subscribe(client: mqtt.Client, userdata: Any, mid: int, rcs: Any, props: Any) -> None:
            self._subscribed.set()

        def on_message(client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
            with self.lock:
                self.messages.append((msg._topic.decode("utf-8", "replace"), bytes(msg.payload), bool(msg.retain)))

        self.client.on_connect = on_connect
        self.client.on_subscribe = on_subscribe
        self.client.on_message = on_message
        self.client.reconnect_delay_set(1, 2)
        self.client.connect(host, port, keepalive=30)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError(f"watcher could not subscribe to {filters} on {host}:{port}")

    def on(self, topic_filter: str) -> list[bytes]:
        with self.lock:
            return [p for t, p, _ in self.messages if mqtt.topic_matches_sub(topic_filter, t)]

    def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Publisher:
    """A sensor-side client: QoS 1 publishes that wait for the broker's acknowledgement."""

    def __init__(self, host: str, port: int, *, auth: tuple[str, str] | None = None) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex[:8]}")
        if auth is not None:
            self.client.username_pw_set(*auth)
        self.client.max_inflight_messages_set(200)
        self.client.max_queued_messages_set(0)
        self.client.connect(host, port, keepalive=30)
        self.client.loop_start()

    def publish_all(self, messages: list[tuple[str, bytes]], *, qos: int = 1, timeout: float = 60.0) -> None:
        infos = [self.client.publish(topic, payload, qos=qos) for topic, payload in messages]
        deadline = time.monotonic() + timeout
        for info in infos:
            info.wait_for_publish(max(deadline - time.monotonic(), 0.1))
            if not info.is_published():
                raise AssertionError("the broker did not acknowledge every reading in time")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Daemon:
    """``edge-gru serve`` in a subprocess with a config written from ``sections`` (merged over defaults)."""

    def __init__(
        self,
        workdir: Path,
        *,
        host: str,
        port: int,
        sections: dict[str, dict[str, Any]] | None = None,
        client_id: str | None = None,
        env: dict[str, str] | None = None,
        fsize_limit: int | None = None,
        config_mode: int = 0o600,
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.client_id = client_id or f"rel-{uuid.uuid4().hex[:8]}"
        base: dict[str, dict[str, Any]] = {
            "mqtt": {
                "host": host,
                "port": port,
                "client_id": self.client_id,
                "reconnect_min_s": 0.1,
                "reconnect_max_s": 0.5,
            },
            "model": {"path": str(DEFAULT_MODEL), "backend": "numpy"},
            "streams": {"input": ["sensors/{stream}/value"], "output": "predictions/{stream}"},
            "state": {"dir": str(self.workdir / "state"), "checkpoint_interval_s": 30},
            "stats": {"interval_s": 0.2},
            "logging": {"level": "info", "warn_interval_s": 0.0},
        }
        for name, table in (sections or {}).items():
            base.setdefault(name, {}).update(table)
        self.sections = base
        self.config_path = self.workdir / "edge-gru.toml"
        self.config_path.write_text(toml_text(base))
        os.chmod(self.config_path, config_mode)
        self.env = env or {}
        self.fsize_limit = fsize_limit
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: list[str] = []
        self._log_lock = threading.Lock()
        self._reader: threading.Thread | None = None
        self.starts = 0
        self._ready_mark = 0

    @property
    def stats_topic(self) -> str:
        return f"edge-gru/{self.client_id}/stats"

    @property
    def status_topic(self) -> str:
        return f"edge-gru/{self.client_id}/status"

    @property
    def checkpoint_path(self) -> Path:
        return Path(self.sections["state"]["dir"]) / f"{self.client_id}.checkpoint.npz"

    def start(self) -> Daemon:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "NUMBA_CACHE_DIR": str(self.workdir / "numba-cache"), **self.env}
        env.pop("NOTIFY_SOCKET", None)
        limit = self.fsize_limit

        def preexec() -> None:
            if limit is not None:
                resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge_gru.cli", "serve", "--config", str(self.config_path)],
            cwd=self.workdir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            preexec_fn=preexec if limit is not None else None,
        )
        self.starts += 1
        self._ready_mark = len(self.events("mqtt_subscribed"))
        proc = self.proc

        def read() -> None:
            assert proc.stdout is not None
            for raw in proc.stdout:
                with self._log_lock:
                    self._log.append(raw.decode("utf-8", "replace").rstrip("\n"))

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        with self._log_lock:
            return "\n".join(self._log)

    def events(self, name: str) -> list[str]:
        with self._log_lock:
            return [line for line in self._log if f"event={name}" in line or f'"event": "{name}"' in line]

    def wait_log(self, name: str, timeout: float = 30.0, count: int = 1) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.events(name)) >= count:
                return
            if not self.alive():
                raise AssertionError(f"daemon exited ({self.proc and self.proc.returncode}):\n{self.log_text()}")
            time.sleep(0.05)
        raise AssertionError(f"no event={name} within {timeout} s:\n{self.log_text()[-4000:]}")

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until this run of the daemon has subscribed (and published ``online``)."""
        self.wait_log("mqtt_subscribed", timeout, count=self._ready_mark + 1)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        if self._reader is not None:
            self._reader.join(5)
        return rc

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self._reader is not None:
            self._reader.join(5)

    def rss_bytes(self) -> int:
        return procstat.rss_bytes(self.pid)


def latest_stats(watcher: Watcher, daemon: Daemon) -> dict[str, Any] | None:
    payloads = watcher.on(daemon.stats_topic)
    return json.loads(payloads[-1]) if payloads else None


def wait_stats(
    watcher: Watcher, daemon: Daemon, predicate: Callable[[dict[str, Any]], bool], timeout: float, what: str
) -> dict[str, Any]:
    """The first stats message (after now) that satisfies ``predicate``."""
    deadline = time.monotonic() + timeout
    seen = len(watcher.on(daemon.stats_topic))
    last: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        payloads = watcher.on(daemon.stats_topic)
        for raw in payloads[seen:]:
            last = json.loads(raw)
            if predicate(last):
                return last
        seen = len(payloads)
        if not daemon.alive():
            raise AssertionError(f"daemon exited while waiting for {what}:\n{daemon.log_text()[-4000:]}")
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}; last stats: {last}")


def accounted(snap: dict[str, Any]) -> bool:
    """The accounting identity of the stats topic: every reading is published, dropped or still queued."""
    return snap["received"] == snap["published"] + sum(snap["dropped"].values()) + snap["queued"]
