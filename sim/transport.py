"""How the simulated readings reach the daemon's code.

* :class:`InProcessTransport` (the default): the daemon's own :class:`~edge_gru.daemon.worker.Worker`
  in this process. Each reading is the payload bytes a sensor would publish, handed to
  ``Worker.submit`` with its topic (topic -> stream, parse, queue) and drained with
  ``Worker.process_available`` (batched ``pool.update_detailed``, ``encode_forecast``,
  publish) -- the daemon's code path, with a collector in place of the MQTT client.
* :class:`sim.mqtt.MqttTransport`: a real broker and a running (or spawned) daemon.
* :class:`PoolTransport`: the bare :class:`~edge_gru.pool.StreamPool`, no payloads and no
  queue; the reference the tests and the benchmark compare the daemon's path against.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_gru.daemon.config import DEFAULT_INPUT, DEFAULT_OUTPUT, StreamsConfig
from edge_gru.daemon.payload import STATUS_REASONS, DropReason, decode_forecast
from edge_gru.pool import DEFAULT_MAX_STREAMS, Status
from sim.clock import SimClock
from sim.faults import GARBAGE
from sim.schedule import Schedule

if TYPE_CHECKING:
    from edge_gru.model import Model

INPUT_TEMPLATE = DEFAULT_INPUT
OUTPUT_TEMPLATE = DEFAULT_OUTPUT
# Drop reasons that come from the stream rules, the queue and publishing, not from payload parsing.
NON_PAYLOAD_REASONS = frozenset(r for r in DropReason if not r.from_payload)

Progress = Callable[[int], None]


@dataclass
class Outcome:
    """What a transport observed: the forecasts published and the daemon's counters."""

    transport: str
    model_id: str
    backend: str
    stream: np.ndarray  # (F,) int index into the schedule's streams of each forecast
    ts: np.ndarray  # (F,) ``ts`` of the reading each forecast follows
    forecast_ts: np.ndarray  # (F,)
    value: np.ndarray  # (F,)
    received: int
    published: int
    dropped: dict[str, int]
    gap_resets: int | None
    latency_ms: dict[str, float | None]  # p50_ms, p99_ms, max_ms; see ``latency_kind``
    latency_kind: str
    wall_s: float
    extra: dict[str, Any] = field(default_factory=dict)
    # the adaptation's interval and anomaly flag of each forecast; None when the payloads had none
    lower: np.ndarray | None = None  # (F,)
    upper: np.ndarray | None = None  # (F,)
    anomaly: np.ndarray | None = None  # (F,) bool


class Collector:
    """A :class:`~edge_gru.daemon.worker.Publisher` that keeps what the worker publishes."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        self.messages.append((topic, payload))


def decode_forecasts(payloads: list[bytes], index: dict[str, int]) -> tuple[np.ndarray, ...]:
    """Forecast payloads (``docs/payloads.md``) -> (stream index, ts, forecast_ts, value, lower, upper, anomaly).

    ``lower``/``upper`` are NaN and ``anomaly`` is -1 where a payload has no such field (adaptation off).
    """
    n = len(payloads)
    stream = np.empty(n, dtype=np.int64)
    ts = np.empty(n)
    fts = np.empty(n)
    value = np.empty(n)
    lower = np.full(n, np.nan)
    upper = np.full(n, np.nan)
    anomaly = np.full(n, -1, dtype=np.int8)
    for i, raw in enumerate(payloads):
        doc = decode_forecast(raw)
        stream[i] = index.get(doc.stream, -1)
        ts[i] = doc.ts
        fts[i] = np.nan if doc.forecast_ts is None else doc.forecast_ts
        value[i] = doc.value
        if doc.anomaly is not None:
            anomaly[i] = doc.anomaly
            lower[i] = np.nan if doc.lower is None else doc.lower
            upper[i] = np.nan if doc.upper is None else doc.upper
    return stream, ts, fts, value, lower, upper, anomaly


class InProcessTransport:
    """The daemon's Worker in this process, driven tick by tick on the simulator's clock."""

    name = "in-process"

    def __init__(
        self,
        model: Model,
        *,
        input_template: str = INPUT_TEMPLATE,
        output_template: str = OUTPUT_TEMPLATE,
        settings: StreamsConfig | None = None,
        adaptation: str = "bundle",
    ) -> None:
        """``settings``: the daemon's ``[streams]`` (its defaults when None; the topics come from the templates)."""
        self.model = model
        self.adaptation = adaptation
        self.input_template = input_template
        self.output_template = output_template
        self.settings = settings or StreamsConfig()
        self.batch_size = self.settings.batch_size

    def run(self, schedule: Schedule, clock: SimClock, progress: Progress | None = None) -> Outcome:
        from edge_gru.adaptation import resolve_spec
        from edge_gru.daemon.worker import Worker

        names = schedule.names
        collector = Collector()
        settings = dataclasses.replace(
            self.settings,
            input=(self.input_template,),
            output=self.output_template,
            max_streams=max(self.settings.max_streams, len(names)),
            idle_timeout_s=None,  # simulated time: no stream is expired for being idle
        )
        worker = Worker(
            model=self.model,
            publisher=collector,
            settings=settings,
            adaptation=lambda m: resolve_spec(m.manifest.extra, self.adaptation),
        )
        topics = [self.input_template.replace("{stream}", s) for s in names]
        stream_of = schedule.stream.tolist()
        payloads = schedule.payloads
        submit, process = worker.submit, worker.process_available
        batch = self.batch_size
        ticks = schedule.ticks.tolist()
        elapsed = schedule.elapsed
        index = {s: i for i, s in enumerate(names)}
        parts: list[tuple[np.ndarray, ...]] = []
        decode_s = 0.0  # the simulator's own work, not the daemon's: kept out of the timing
        clock.start()
        t0 = time.perf_counter()
        for k in range(len(ticks) - 1):
            lo, hi = ticks[k], ticks[k + 1]
            clock.wait_until(float(elapsed[lo]))
            for i in range(lo, hi):
                submit(topics[stream_of[i]], payloads[i])
                if worker.queued >= batch:
                    process()
            while process():
                pass
            if len(collector.messages) >= 4096 or k == len(ticks) - 2:
                t = time.perf_counter()
                parts.append(decode_forecasts([p for _, p in collector.messages], index))
                collector.messages.clear()
                decode_s += time.perf_counter() - t
            if progress is not None:
                progress(hi - lo)
        wall = time.perf_counter() - t0 - decode_s
        stream, ts, fts, value, lower, upper, anomaly = (
            (np.concatenate(c) for c in zip(*parts, strict=True)) if parts else _empty()
        )
        return Outcome(
            transport=self.name,
            model_id=self.model.id,
            backend=self.model.backend_name,
            stream=stream,
            ts=ts,
            forecast_ts=fts,
            value=value,
            received=worker.stats.received,
            published=worker.stats.published,
            dropped={str(k): v for k, v in worker.stats.dropped.items()},
            gap_resets=worker.pool.gap_resets,
            latency_ms=worker.stats.latency_quantiles(),
            latency_kind="receive -> publish inside the worker",
            wall_s=wall,
            extra={"queued": worker.queued, "batches": worker.stats.batches},
            **_bands(lower, upper, anomaly),
        )


def _empty() -> tuple[np.ndarray, ...]:
    return np.zeros(0, np.int64), np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0, np.int8)


def _bands(lower: np.ndarray, upper: np.ndarray, anomaly: np.ndarray) -> dict[str, np.ndarray]:
    """Outcome's interval fields when every forecast carried them (the adaptation was on)."""
    if not anomaly.size or (anomaly < 0).any():
        return {}
    return {"lower": lower, "upper": upper, "anomaly": anomaly.astype(bool)}


class PoolTransport:
    """The bare stream pool fed the schedule's readings: the reference the daemon's path must equal."""

    name = "pool"

    def __init__(self, model: Model, *, max_streams: int = DEFAULT_MAX_STREAMS) -> None:
        self.model = model
        self.max_streams = max_streams

    def run(self, schedule: Schedule, clock: SimClock, progress: Progress | None = None) -> Outcome:
        names = schedule.names
        pool = self.model.pool(max(self.max_streams, len(names)))
        ids = np.array(names, dtype=object)
        out_s: list[np.ndarray] = []
        out_ts: list[np.ndarray] = []
        out_f: list[np.ndarray] = []
        out_v: list[np.ndarray] = []
        dropped: dict[str, int] = {}
        received = 0
        ticks = schedule.ticks.tolist()
        clock.start()
        t0 = time.perf_counter()
        for k in range(len(ticks) - 1):
            lo, hi = ticks[k], ticks[k + 1]
            clock.wait_until(float(schedule.elapsed[lo]))
            received += hi - lo
            sel = np.arange(lo, hi)
            garbage = schedule.fates[sel] == GARBAGE
            if garbage.any():
                dropped["payload"] = dropped.get("payload", 0) + int(garbage.sum())
                sel = sel[~garbage]
            s = schedule.stream[sel]
            r = pool.update_detailed(ids[s].tolist(), schedule.values[sel], schedule.ts[sel], now=time.time())
            ok = r.status == Status.FORECAST
            out_s.append(s[ok])
            out_ts.append(schedule.ts[sel][ok])
            out_f.append(r.forecast_ts[ok])
            out_v.append(r.forecasts[ok])
            for code in np.unique(r.status[~ok]).tolist():
                reason = STATUS_REASONS[Status(code)]
                dropped[reason] = dropped.get(reason, 0) + int((r.status == code).sum())
            if progress is not None:
                progress(hi - lo)
        wall = time.perf_counter() - t0
        stream = np.concatenate(out_s) if out_s else np.zeros(0, np.int64)
        return Outcome(
            transport=self.name,
            model_id=self.model.id,
            backend=self.model.backend_name,
            stream=stream.astype(np.int64),
            ts=np.concatenate(out_ts) if out_ts else np.zeros(0),
            forecast_ts=np.concatenate(out_f) if out_f else np.zeros(0),
            value=np.concatenate(out_v) if out_v else np.zeros(0),
            received=received,
            published=int(stream.size),
            dropped=dropped,
            gap_resets=pool.gap_resets,
            latency_ms={"p50_ms": None, "p99_ms": None, "max_ms": None},
            latency_kind="none (direct pool calls)",
            wall_s=wall,
        )
