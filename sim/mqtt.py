"""The MQTT transport: readings published to a real broker, forecasts read back from it.

``--broker mqtt://host:port`` drives a daemon that already runs against that broker;
``--spawn-broker`` starts a private mosquitto and an ``edge-gru serve`` subprocess for a
full end-to-end run, and can restart either mid-run (``broker_restart=N``,
``daemon_restart=N``): the daemon's persistent session and checkpoint must carry every
reading across, so the forecasts equal the in-process run's.

Flow control: the simulator keeps the readings the daemon may still hold below
``max_inflight`` (counted from the forecasts it has seen and the readings it knows the
daemon drops), so a virtual-clock run never overflows the daemon's queue.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import numpy as np

from edge_gru.daemon.config import LoggingConfig
from edge_gru.daemon.payload import SENML_NAME, SENML_RELATIVE_S, decode_forecast, parse_values
from edge_gru.errors import ConfigError, EdgeGruError, PayloadError
from edge_gru.harness import Broker, Daemon, HarnessError, mosquitto_binary
from sim.clock import SimClock
from sim.config import DEFAULT_SENML_TOPIC
from sim.faults import ACCEPT
from sim.schedule import Schedule
from sim.transport import Outcome, Progress, decode_forecasts

if TYPE_CHECKING:
    from sim.config import SimConfig

STATS_INTERVAL_S = 0.5
WARMUP_BOUND = 64  # readings per stream (re)start that may end as warm-up instead of a forecast


class SimulationError(EdgeGruError):
    """The broker or the daemon did not behave as an end-to-end run needs."""


def private_broker(workdir: Path) -> Broker:
    """The mosquitto of ``--spawn-broker``: persistent sessions, queues deep enough for a whole run."""
    try:
        mosquitto_binary()
    except HarnessError as exc:
        raise ConfigError("--spawn-broker needs mosquitto (apt-get install mosquitto); or pass --broker URL") from exc
    return Broker(workdir, extra_config="max_queued_messages 1000000\nmax_inflight_messages 1000\n")


def daemon_process(
    workdir: Path,
    *,
    host: str,
    port: int,
    model: str,
    backend: str,
    inputs: str,
    output: str,
    stats_interval_s: float = STATS_INTERVAL_S,
    senml: str | None = None,
) -> Daemon:
    """``edge-gru serve`` for an end-to-end run: streams never expire, checkpoints only when it stops."""
    return Daemon(
        workdir,
        host=host,
        port=port,
        client_id=f"edge-gru-sim-daemon-{uuid.uuid4().hex[:8]}",
        sections={
            "mqtt": {"reconnect_min_s": 0.2, "reconnect_max_s": 1.0},
            "model": {"path": str(Path(model).resolve()), "backend": backend},
            "streams": {
                "input": [inputs],
                "output": output,
                "idle_timeout_s": 1e9,
                "senml_input": [senml] if senml else [],
                "max_payload_bytes": 1 << 20,  # packs of many records
            },
            "state": {"checkpoint_interval_s": 3600},
            "stats": {"interval_s": stats_interval_s},
            "logging": {"level": "warning", "warn_interval_s": LoggingConfig().warn_interval_s},
        },
        own_numba_cache="NUMBA_CACHE_DIR" not in os.environ,
    )


def senml_records(schedule: Schedule, prefix: str) -> list[str | None]:
    """Each message as a SenML record (``n``, ``v``, absolute ``t``) meaning the same reading, or None.

    A payload is packed only when the daemon reads it as one value with its own timestamp
    and SenML can say the same: a valid name, an absolute time (not below 2**28). Garbage
    and other faults the parser refuses are sent alone, so they are dropped as before.
    """
    out: list[str | None] = []
    names = [prefix + s for s in schedule.names]
    for k, payload in zip(schedule.stream.tolist(), schedule.payloads, strict=True):
        try:
            values, ts = parse_values(payload, ("value",))
        except PayloadError:
            out.append(None)
            continue
        if ts is None or ts < SENML_RELATIVE_S or not SENML_NAME.match(names[k]):
            out.append(None)
            continue
        out.append(f'{{"n":{json.dumps(names[k])},"v":{values[0]!r},"t":{ts!r}}}')
    return out


@dataclass
class _Seen:
    forecasts: list[tuple[bytes, float]]
    stats: dict[str, dict[str, Any]]
    status: dict[str, bytes]


class MqttTransport:
    """Publish the schedule's payloads to a broker; collect the daemon's forecasts and stats."""

    name = "mqtt"

    def __init__(
        self,
        *,
        broker: str | None,
        spawn: bool,
        model: str | None,
        backend: str,
        input_template: str,
        output_template: str,
        broker_restarts: int = 0,
        daemon_restarts: int = 0,
        max_inflight: int = 2000,
        drain_timeout_s: float = 60.0,
        stream_prefix: str | None = None,
        daemon_id: str | None = None,
        pack: int = 1,
        senml_topic: str = DEFAULT_SENML_TOPIC,
    ) -> None:
        self.broker_url = broker
        self.spawn = spawn
        self.model = model
        self.backend = backend
        self.input_template = input_template
        self.output_template = output_template
        self.broker_restarts = broker_restarts
        self.daemon_restarts = daemon_restarts
        self.max_inflight = max_inflight
        self.drain_timeout_s = drain_timeout_s
        # Against a daemon that already runs, stream ids are new per run: its pool still holds earlier runs' streams.
        self.prefix = stream_prefix if stream_prefix is not None else ("" if spawn else f"sim{uuid.uuid4().hex[:6]}-")
        self.restarts = {"broker_restart": 0, "daemon_restart": 0}
        self.daemon_id = daemon_id  # the client_id of the daemon to drive (default: the first one online)
        self.pack = pack  # > 1: SenML packs of up to this many readings on senml_topic
        self.senml_topic = senml_topic

    @classmethod
    def from_config(cls, config: SimConfig) -> MqttTransport:
        from sim.config import default_model_path

        model = config.model or (str(default_model_path()) if config.spawn_broker else None)
        return cls(
            broker=config.broker,
            spawn=config.spawn_broker,
            model=model,
            backend=config.backend,
            input_template=config.input_template,
            output_template=config.output_template,
            broker_restarts=config.faults.broker_restart,
            daemon_restarts=config.faults.daemon_restart,
            daemon_id=config.daemon_id,
            pack=config.pack,
            senml_topic=config.senml_topic,
        )

    # -- the run -------------------------------------------------------------------------------
    def run(self, schedule: Schedule, clock: SimClock, progress: Progress | None = None) -> Outcome:
        with tempfile.TemporaryDirectory(prefix="edge-gru-sim-") as tmp:
            work = Path(tmp)
            broker = daemon = None
            try:
                if self.spawn:
                    broker = private_broker(work / "mosquitto")
                    broker.start()
                    host, port = broker.host, broker.port
                    daemon = daemon_process(
                        work / "daemon",
                        host=host,
                        port=port,
                        model=str(self.model),
                        backend=self.backend,
                        inputs=self.input_template,
                        output=self.output_template,
                        senml=self.senml_topic if self.pack > 1 else None,
                    )
                    daemon.start()
                else:
                    url = urlparse(str(self.broker_url))
                    host, port = url.hostname or "127.0.0.1", url.port or 1883
                return self._run(schedule, clock, progress, host, port, broker, daemon)
            finally:
                if daemon is not None:
                    daemon.stop()
                if broker is not None:
                    broker.stop()

    def _run(
        self,
        schedule: Schedule,
        clock: SimClock,
        progress: Progress | None,
        host: str,
        port: int,
        broker: Broker | None,
        daemon: Daemon | None,
    ) -> Outcome:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        seen = _Seen([], {}, {})
        lock = threading.Lock()
        connected = threading.Event()
        acked = [0]
        out_filter = self.output_template.replace("{stream}", "+")
        subs = [(out_filter, 1), ("edge-gru/+/stats", 0), ("edge-gru/+/status", 1)]

        def on_connect(client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
            if not reason_code.is_failure:
                client.subscribe(subs)
                connected.set()

        def on_disconnect(client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
            connected.clear()

        def on_publish(client: Any, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
            acked[0] += 1

        def on_message(client: Any, userdata: Any, msg: Any) -> None:
            topic = msg.topic
            if topic.startswith("edge-gru/") and topic.endswith("/stats"):
                try:
                    doc = json.loads(msg.payload)
                except ValueError:
                    return
                with lock:
                    seen.stats[topic.split("/")[1]] = doc
            elif topic.startswith("edge-gru/") and topic.endswith("/status"):
                with lock:
                    seen.status[topic.split("/")[1]] = bytes(msg.payload)
            else:
                with lock:
                    seen.forecasts.append((bytes(msg.payload), time.monotonic()))

        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"edge-gru-sim-{uuid.uuid4().hex[:10]}", protocol=mqtt.MQTTv5
        )
        client.on_connect, client.on_disconnect = on_connect, on_disconnect
        client.on_publish, client.on_message = on_publish, on_message
        client.max_inflight_messages_set(1000)
        client.max_queued_messages_set(0)
        client.reconnect_delay_set(1, 2)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600  # keep our forecasts while we reconnect after a broker restart
        try:
            client.connect(host, port, keepalive=30, clean_start=True, properties=props)
        except OSError as exc:
            raise SimulationError(f"cannot connect to the broker at {host}:{port}: {exc}") from exc
        client.loop_start()
        try:
            if not connected.wait(10):
                raise SimulationError(f"the broker at {host}:{port} did not accept the simulator's connection")
            daemon_id = self._wait_online(seen, lock, daemon)
            return self._publish_all(
                schedule, clock, progress, client, seen, lock, connected, acked, broker, daemon, daemon_id
            )
        finally:
            client.disconnect()
            client.loop_stop()

    def _wait_online(self, seen: _Seen, lock: threading.Lock, daemon: Daemon | None) -> str:
        deadline = time.monotonic() + (60.0 if daemon else 10.0)
        while time.monotonic() < deadline:
            if daemon is not None:
                daemon.check_alive()
            with lock:
                online = [cid for cid, s in seen.status.items() if s == b"online"]
            if daemon is not None and daemon.client_id in online:
                return daemon.client_id
            if daemon is None and self.daemon_id is not None and self.daemon_id in online:
                return self.daemon_id
            if daemon is None and self.daemon_id is None and online:
                return online[0]
            time.sleep(0.05)
        raise SimulationError(
            "no edge-gru daemon reports online on this broker (retained topic edge-gru/<client_id>/status); "
            "start 'edge-gru serve' against it, or use --spawn-broker"
        )

    def _stats_of(self, seen: _Seen, lock: threading.Lock, daemon_id: str) -> dict[str, Any] | None:
        with lock:
            return seen.stats.get(daemon_id)

    def _publish_all(
        self,
        schedule: Schedule,
        clock: SimClock,
        progress: Progress | None,
        client: Any,
        seen: _Seen,
        lock: threading.Lock,
        connected: threading.Event,
        acked: list[int],
        broker: Broker | None,
        daemon: Daemon | None,
        daemon_id: str,
    ) -> Outcome:
        names = schedule.names
        topics = [self.input_template.replace("{stream}", self.prefix + s) for s in names]
        stream_of = schedule.stream.tolist()
        payloads = schedule.payloads
        # readings the daemon will drop (known from the injected faults), counted as they are sent
        known_drop = np.cumsum(schedule.fates != ACCEPT)
        slack = WARMUP_BOUND * len(names) + WARMUP_BOUND * (
            schedule.injected.get("gap", 0) + schedule.injected.get("clock_jump", 0)
        )
        restart_at = self._restart_points(len(schedule))
        send_time = np.zeros(len(schedule))
        baseline: dict[str, Any] = {}
        finished: list[dict[str, Any]] = []  # final stats of daemon processes that were restarted
        if not self.spawn:
            time.sleep(min(3.0, 2 * STATS_INTERVAL_S))
            baseline = self._stats_of(seen, lock, daemon_id) or {}
        ticks = schedule.ticks.tolist()
        records = senml_records(schedule, self.prefix) if self.pack > 1 else [None] * len(schedule)
        pending: list[str] = []  # SenML records not yet published (their readings count as sent)

        def flush() -> None:
            if pending:
                client.publish(self.senml_topic, ("[" + ",".join(pending) + "]").encode(), qos=1)
                pending.clear()

        clock.start()
        t0 = time.perf_counter()
        sent = 0
        for k in range(len(ticks) - 1):
            lo, hi = ticks[k], ticks[k + 1]
            clock.wait_until(float(schedule.elapsed[lo]))
            for i in range(lo, hi):
                while restart_at and i >= restart_at[0][0]:
                    flush()
                    _, what = restart_at.pop(0)
                    self._drain(client, seen, lock, acked, sent, known_drop, daemon, daemon_id, exact=True)
                    if what == "broker_restart" and broker is not None:
                        broker.stop()
                        broker.start()
                        if not connected.wait(30):
                            raise SimulationError("the simulator did not reconnect after the broker restart")
                    elif what == "daemon_restart" and daemon is not None:
                        stats = self._final_stats(seen, lock, daemon_id, sent)
                        finished.append(stats)
                        with lock:
                            seen.stats.pop(daemon_id, None)
                            seen.status.pop(daemon_id, None)
                        daemon.stop()
                        daemon.start()
                        self._wait_online(seen, lock, daemon)
                    self.restarts[what] += 1
                limit_wait = time.monotonic() + self.drain_timeout_s
                if pending and sent - len(seen.forecasts) - (known_drop[sent - 1] if sent else 0) > self.max_inflight:
                    flush()
                while sent - len(seen.forecasts) - (known_drop[sent - 1] if sent else 0) > self.max_inflight + slack:
                    if daemon is not None:
                        daemon.check_alive()
                    if time.monotonic() > limit_wait:
                        raise SimulationError("the daemon stopped publishing forecasts (flow control timed out)")
                    time.sleep(0.001)
                send_time[i] = time.monotonic()
                record = records[i]
                if record is None:  # a payload SenML cannot carry (garbage, no ts): alone, in order
                    flush()
                    client.publish(topics[stream_of[i]], payloads[i], qos=1)
                else:
                    pending.append(record)
                    if len(pending) >= self.pack:
                        flush()
                sent += 1
            flush()
            if progress is not None:
                progress(hi - lo)
        self._drain(client, seen, lock, acked, sent, known_drop, daemon, daemon_id, exact=False)
        final = self._final_stats(seen, lock, daemon_id, sent, baseline=baseline, finished=finished)
        wall = time.perf_counter() - t0
        return self._outcome(schedule, seen, lock, send_time, final, baseline, finished, wall, daemon_id)

    def _restart_points(self, n: int) -> list[tuple[int, str]]:
        points = []
        for what, count in (("broker_restart", self.broker_restarts), ("daemon_restart", self.daemon_restarts)):
            for j in range(count):
                points.append((int(n * (j + 1) / (count + 1)), what))
        return sorted(points)

    def _drain(
        self,
        client: Any,
        seen: _Seen,
        lock: threading.Lock,
        acked: list[int],
        sent: int,
        known_drop: np.ndarray,
        daemon: Daemon | None,
        daemon_id: str,
        *,
        exact: bool,
    ) -> None:
        """Wait until the broker acknowledged every reading and the daemon has handled them (its stats say so)."""
        deadline = time.monotonic() + self.drain_timeout_s
        quiet_since, last = time.monotonic(), -1
        while time.monotonic() < deadline:
            if daemon is not None:
                daemon.check_alive()
            with lock:
                n_fc = len(seen.forecasts)
                stats = seen.stats.get(daemon_id)
            if n_fc != last:
                quiet_since, last = time.monotonic(), n_fc
            quiet = time.monotonic() - quiet_since > (4 * STATS_INTERVAL_S if exact else 1.0)
            idle = stats is None or stats.get("queued", 0) == 0
            if acked[0] >= sent and quiet and idle:
                return
            time.sleep(0.02)

    def _final_stats(
        self,
        seen: _Seen,
        lock: threading.Lock,
        daemon_id: str,
        sent: int,
        *,
        baseline: dict[str, Any] | None = None,
        finished: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """The daemon's stats once they account for every reading sent (or the last seen after a timeout)."""
        before = sum(int(s.get("received", 0)) for s in finished or [])
        base = int((baseline or {}).get("received", 0))
        deadline = time.monotonic() + (self.drain_timeout_s if self.spawn else 3 * STATS_INTERVAL_S + 2)
        stats: dict[str, Any] = {}
        while time.monotonic() < deadline:
            with lock:
                stats = dict(seen.stats.get(daemon_id) or {})
            if stats and stats.get("received", 0) - base + before >= sent and stats.get("queued", 1) == 0:
                published = int(stats.get("published", 0)) + sum(int(s.get("published", 0)) for s in finished or [])
                with lock:
                    n_fc = len(seen.forecasts)
                if not self.spawn or n_fc >= published:
                    return {**stats, "complete": True}
            time.sleep(0.05)
        return {**stats, "complete": False}

    def _outcome(
        self,
        schedule: Schedule,
        seen: _Seen,
        lock: threading.Lock,
        send_time: np.ndarray,
        final: dict[str, Any],
        baseline: dict[str, Any],
        finished: list[dict[str, Any]],
        wall: float,
        daemon_id: str,
    ) -> Outcome:
        with lock:
            got = list(seen.forecasts)
        index = {self.prefix + s: i for i, s in enumerate(schedule.names)}
        stream, ts, fts, value, *_bands = decode_forecasts([p for p, _ in got], index)
        arrived = np.array([t for _, t in got])
        model_id = backend = "?"
        if got:
            first_forecast = decode_forecast(got[0][0])
            model_id, backend = first_forecast.model, first_forecast.backend
        mine = stream >= 0
        # A forecast redelivered after a reconnect arrives twice: keep the first.
        keys = np.stack([stream, ts.view(np.int64)], axis=1) if got else np.zeros((0, 2), np.int64)
        _, first = np.unique(keys, axis=0, return_index=True) if got else (None, np.zeros(0, np.int64))
        keep = np.zeros(len(got), dtype=bool)
        keep[first] = True
        keep &= mine
        redelivered = int(mine.sum() - keep.sum())
        # end-to-end latency: reading published -> its forecast received
        lookup = {
            (int(s), float(t)): i
            for i, (s, t, f) in enumerate(
                zip(schedule.stream.tolist(), schedule.ts.tolist(), schedule.fates.tolist(), strict=True)
            )
            if f == ACCEPT
        }
        lat = np.array(
            [
                arrived[j] - send_time[lookup[(int(stream[j]), float(ts[j]))]]
                for j in np.flatnonzero(keep)
                if (int(stream[j]), float(ts[j])) in lookup
            ]
        )
        dropped: dict[str, int] = {}
        received = published = 0
        gap_resets = 0
        for part, base in [*((s, {}) for s in finished), (final, baseline)]:
            received += int(part.get("received", 0)) - int(base.get("received", 0))
            published += int(part.get("published", 0)) - int(base.get("published", 0))
            gap_resets += int(part.get("gap_resets", 0)) - int(base.get("gap_resets", 0))
            for reason, n in (part.get("dropped") or {}).items():
                dropped[reason] = dropped.get(reason, 0) + int(n) - int((base.get("dropped") or {}).get(reason, 0))
        dropped = {k: v for k, v in dropped.items() if v}
        counted = bool(final.get("complete")) and (self.spawn or bool(baseline))
        if not counted:
            # Without the daemon's stats before and after the run its counters cannot be attributed to it.
            received, published, dropped = len(schedule), int(keep.sum()), {}
        quant: dict[str, float | None] = (
            {
                "p50_ms": float(np.percentile(lat, 50) * 1e3),
                "p99_ms": float(np.percentile(lat, 99) * 1e3),
                "max_ms": float(lat.max() * 1e3),
            }
            if lat.size
            else {"p50_ms": None, "p99_ms": None, "max_ms": None}
        )
        return Outcome(
            transport="mqtt (spawned broker and daemon)" if self.spawn else f"mqtt {self.broker_url}",
            model_id=model_id,
            backend=backend,
            stream=stream[keep],
            ts=ts[keep],
            forecast_ts=fts[keep],
            value=value[keep],
            received=received,
            published=published,
            dropped=dropped,
            gap_resets=gap_resets if counted else None,
            latency_ms=quant,
            latency_kind="reading published -> forecast received, end to end through the broker",
            wall_s=wall,
            extra={
                "daemon": daemon_id,
                "stats_complete": counted,
                "redelivered_forecasts": redelivered,
            },
        )
