"""The daemon's core: parse -> bounded queue -> batched ``pool.update_detailed`` -> publish.

:meth:`Worker.submit` runs on the MQTT network thread and only parses and enqueues, so a
slow model never stalls keep-alives or acknowledgements. One worker thread owns the
:class:`~edge_gru.pool.StreamPool`: it drains the queue in batches across streams, and
everything else that touches the pool (checkpoints, idle expiry, model reloads) runs on
that thread too, through :meth:`Worker.add_periodic` and :meth:`Worker.call_soon`. The
simulator drives the same object synchronously through :meth:`Worker.process_available`.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from edge_gru.daemon.config import QUEUE_POLICIES, StreamsConfig
from edge_gru.daemon.logs import RateLimitedWarnings, event
from edge_gru.daemon.payload import (
    STATUS_REASONS,
    DropReason,
    ForecastEncoder,
    InputTopics,
    Pack,
    Route,
    TopicMap,
    Values,
    output_topic,
    parse_pack,
    parse_senml,
    parse_values,
)
from edge_gru.daemon.stats import Stats
from edge_gru.errors import PayloadError
from edge_gru.pool import Status, StreamPool

if TYPE_CHECKING:
    from edge_gru.adaptation import AdaptationSpec
    from edge_gru.model import Model

log = logging.getLogger(__name__)

_STATUS_REASONS = {int(s): reason for s, reason in STATUS_REASONS.items()}
# Pool drops worth a (rate-limited) warning: the sender or the limits are at fault, not the stream's warm-up.
_WARN_STATUSES = (Status.OUT_OF_ORDER, Status.DUPLICATE, Status.STREAM_LIMIT, Status.OUT_OF_RANGE, Status.ID_TOO_LONG)


class Publisher(Protocol):
    """Where forecasts go: the MQTT client in the daemon, a collector in the simulator and tests."""

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None: ...


class _Periodic:
    __slots__ = ("due", "fn", "interval_s", "name")

    def __init__(self, name: str, interval_s: float, fn: Callable[[], object]) -> None:
        self.name = name
        self.interval_s = interval_s
        self.fn = fn
        self.due = time.monotonic() + interval_s


class Worker:
    """Batches readings across streams through one :class:`StreamPool` and publishes forecasts."""

    def __init__(
        self,
        *,
        model: Model,
        publisher: Publisher,
        settings: StreamsConfig | None = None,
        clock: Callable[[], float] = time.time,
        pool: StreamPool | None = None,
        on_first_forecast: Callable[[str], None] | None = None,
        warn_interval_s: float = 10.0,
        adaptation: Callable[[Model], AdaptationSpec | None] | None = None,
    ) -> None:
        """``settings``: the daemon's ``[streams]`` (defaults when None); ``pool`` replaces the one built from it."""
        s = StreamsConfig() if settings is None else settings
        if s.queue_policy not in QUEUE_POLICIES:
            raise ValueError(f"queue_policy {s.queue_policy!r}: choose one of {', '.join(QUEUE_POLICIES)}")
        if s.queue_size < 1 or s.batch_size < 1:
            raise ValueError("queue_size and batch_size must be >= 1")
        self.settings = s
        self.model = model
        self.publisher = publisher
        self.topics = TopicMap(s.input)
        # caches keyed by topic or stream, bounded by the pool's size (a churn of streams must not grow them)
        self._cache_size = max(64, s.max_streams)
        self.routes = InputTopics(s.input, s.pack_input, s.senml_input, cache_size=self._cache_size)
        self.output_template = s.output
        self.max_streams = s.max_streams
        self.queue_size = s.queue_size
        self.queue_policy = s.queue_policy
        self.batch_size = s.batch_size
        self.idle_timeout_s = s.idle_timeout_s
        self.max_payload_bytes = s.max_payload_bytes
        self.on_first_forecast = on_first_forecast
        self._clock = clock
        self._features = model.manifest.features
        self.adaptation = adaptation  # the adaptation settings for a model; None: the bundle's own
        self.pool = pool if pool is not None else self._new_pool(model)
        self.stats = Stats(clock=clock)
        self._warnings = RateLimitedWarnings(log, interval_s=warn_interval_s)
        # one tuple per reading: (stream, values, ts or None, receive time)
        self._queue: deque[tuple[str, Values, float | None, float]] = deque()
        self._topics_out: dict[str, str] = {}  # stream -> its output topic
        self._encoder = ForecastEncoder(model.id, model.backend_name, limit=self._cache_size)
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._idle = False
        self._calls: deque[tuple[Callable[[], Any], Future[Any]]] = deque()
        self._periodic: list[_Periodic] = []
        self._announced: set[str] = set()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._drain = True
        self.last_loop = time.monotonic()  # when the worker loop last came round (watchdog)

    # -- the network thread's side -------------------------------------------------------------
    def submit(self, topic: str, payload: bytes, received: float | None = None) -> None:
        """Parse one message and enqueue its readings. Thread-safe, never raises: failures are counted by reason."""
        if received is None:
            received = self._clock()
        route, stream = self.routes.route(topic)
        if route is not Route.READING:
            self._submit_pack(topic, route, stream, payload, received)
            return
        reason = detail = None
        if stream is None:
            reason, detail = DropReason.UNKNOWN_TOPIC, "matches no input template"
        else:
            try:
                values, ts = parse_values(payload, self._features, max_bytes=self.max_payload_bytes)
            except PayloadError as exc:
                reason, detail = getattr(exc, "reason", DropReason.BAD_PAYLOAD), str(exc)
            except Exception as exc:  # a parser bug must not kill the network thread
                reason, detail = DropReason.BAD_PAYLOAD, repr(exc)
        with self._lock:
            self.stats.received += 1
            if reason is not None:
                self.stats.dropped[reason] += 1
            elif len(self._queue) >= self.queue_size and self.queue_policy == "drop_newest":
                self.stats.dropped[DropReason.QUEUE_FULL] += 1
                reason, detail = DropReason.QUEUE_FULL, f"queue holds {self.queue_size}; newest reading dropped"
            else:
                if len(self._queue) >= self.queue_size:
                    self._queue.popleft()
                    self.stats.dropped[DropReason.QUEUE_FULL] += 1
                    reason, detail = DropReason.QUEUE_FULL, f"queue holds {self.queue_size}; oldest reading dropped"
                self._queue.append((stream, values, ts, received))  # type: ignore[arg-type]
                if self._idle:
                    self._wake.notify()
        if reason is not None:
            self._warnings.warn(reason, "dropped_reading", topic=topic, reason=reason, detail=detail)

    def _submit_pack(self, topic: str, route: Route, stream: str | None, payload: bytes, received: float) -> None:
        """A message of several readings: each is queued or counted, as if it had come alone."""
        try:
            if route is Route.PACK:
                assert stream is not None
                pack = parse_pack(payload, stream, self._features, max_bytes=self.max_payload_bytes)
            else:
                pack = parse_senml(payload, self._features, received=received, max_bytes=self.max_payload_bytes)
        except Exception as exc:  # a parser bug must not kill the network thread: the message counts as one
            pack = Pack(drops={DropReason.BAD_PAYLOAD: 1}, detail=repr(exc))
        readings = pack.readings
        full = 0
        with self._lock:
            self.stats.received += pack.count
            for why, n in pack.drops.items():
                self.stats.dropped[why] += n
            room = self.queue_size - len(self._queue)
            if len(readings) > room:
                full = len(readings) - max(room, 0)
                if self.queue_policy == "drop_newest":
                    readings = readings[: max(room, 0)]
                else:
                    for _ in range(min(full, len(self._queue))):
                        self._queue.popleft()
                    readings = readings[-self.queue_size :]  # a pack larger than the whole queue keeps its newest
                self.stats.dropped[DropReason.QUEUE_FULL] += full
            if readings:
                self._queue.extend([(name, values, ts, received) for name, values, ts in readings])
                if self._idle:
                    self._wake.notify()
        if pack.drops:
            reason = next(iter(pack.drops))
            self._warnings.warn(reason, "dropped_reading", topic=topic, reason=reason, detail=pack.detail)
        if full:
            self._warnings.warn(
                DropReason.QUEUE_FULL,
                "dropped_reading",
                topic=topic,
                reason=DropReason.QUEUE_FULL,
                detail=f"queue holds {self.queue_size}; {full} readings of a pack dropped ({self.queue_policy})",
            )

    @property
    def alive(self) -> bool:
        """Whether the worker thread runs (False before start and after stop)."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def queued(self) -> int:
        return len(self._queue)

    # -- the worker's side ---------------------------------------------------------------------
    def process_available(self, max_batch: int | None = None) -> int:
        """Run one batch from the queue through the pool and publish its forecasts; returns readings taken."""
        limit = self.batch_size if max_batch is None else max_batch
        with self._lock:
            k = min(limit, len(self._queue))
            if not k:
                return 0
            popleft = self._queue.popleft
            items = [popleft() for _ in range(k)]
        id_rows, value_rows, given_ts, received_at = zip(*items, strict=True)
        ids: list[str] = list(id_rows)
        values = np.array(value_rows, dtype=np.float64).reshape(k, -1)
        received = np.array(received_at, dtype=np.float64)
        given = np.array([t is not None for t in given_ts], dtype=bool)
        ts = np.array([r if t is None else t for t, r in zip(given_ts, received_at, strict=True)], dtype=np.float64)
        drops: dict[DropReason, int] = {}
        published = 0
        try:
            r = self.pool.update_received(ids, values, ts, given, now=self._clock())
        except Exception:  # one bad batch must not stop the daemon
            log.exception("batch_failed", extra={"fields": {"readings": k}})
            drops[DropReason.INTERNAL_ERROR] = k
        else:
            status, forecasts, forecast_ts = r.status, r.forecasts, r.forecast_ts
            bands = None
            if self.pool.adapter is not None and r.lower is not None and r.upper is not None and r.anomaly is not None:
                bands = (r.lower, r.upper, r.anomaly)
            forecast_rows = np.flatnonzero(status == Status.FORECAST)
            ok = np.zeros(forecast_rows.shape[0], dtype=bool)
            encode = self._encoder.encode
            topics_out = self._topics_out
            ts_list, fts_list, y_list = ts.tolist(), forecast_ts.tolist(), forecasts.tolist()
            lo_list, hi_list, an_list = (b.tolist() for b in bands) if bands is not None else ([], [], [])
            step_rows = r.values.tolist() if r.values is not None else None
            template, publish = self.output_template, self.publisher.publish
            qos, retain = self.settings.output_qos, self.settings.output_retain
            for j, i in enumerate(forecast_rows.tolist()):
                stream = ids[i]
                if not math.isfinite(y_list[i]):
                    # e.g. a reading of 1e300 overflowed the stream's normalization: counted, never published
                    drops[DropReason.FORECAST_NOT_FINITE] = drops.get(DropReason.FORECAST_NOT_FINITE, 0) + 1
                    self._warnings.warn("forecast_not_finite", "forecast_not_finite", stream=stream)
                    continue
                try:
                    if step_rows is not None:
                        lo, hi, an = (lo_list[i], hi_list[i], an_list[i]) if bands is not None else (None, None, None)
                        payload = encode(stream, ts_list[i], fts_list[i], y_list[i], lo, hi, an, step_rows[i])
                    elif bands is not None:
                        payload = encode(stream, ts_list[i], fts_list[i], y_list[i], lo_list[i], hi_list[i], an_list[i])
                    else:
                        payload = encode(stream, ts_list[i], fts_list[i], y_list[i])
                except ValueError:  # a later step of the horizon is not finite: counted like step 1
                    drops[DropReason.FORECAST_NOT_FINITE] = drops.get(DropReason.FORECAST_NOT_FINITE, 0) + 1
                    self._warnings.warn("forecast_not_finite", "forecast_not_finite", stream=stream)
                    continue
                topic = topics_out.get(stream)
                if topic is None:
                    if len(topics_out) >= self._cache_size:
                        topics_out.clear()
                    topic = topics_out[stream] = output_topic(template, stream)
                try:
                    publish(topic, payload, qos=qos, retain=retain)
                except Exception as exc:  # counted and logged, never raised
                    drops[DropReason.PUBLISH_FAILED] = drops.get(DropReason.PUBLISH_FAILED, 0) + 1
                    self._warnings.warn("publish_failed", "publish_failed", stream=stream, detail=str(exc))
                    continue
                ok[j] = True
                if self.on_first_forecast is not None and stream not in self._announced:
                    self._announce(stream)
            published = int(ok.sum())
            if published:
                self.stats.record_latency(self._clock() - received[forecast_rows[ok]])
            counts = np.bincount(status, minlength=len(Status))
            for code, reason in _STATUS_REASONS.items():
                if counts[code]:
                    drops[reason] = drops.get(reason, 0) + int(counts[code])
            for code in _WARN_STATUSES:
                if counts[code]:
                    first = int(np.flatnonzero(status == code)[0])
                    word = STATUS_REASONS[code]
                    stream = ids[first] if code is not Status.ID_TOO_LONG else ids[first][:64] + "..."
                    self._warnings.warn(word, "dropped_reading", stream=stream, reason=word, count=int(counts[code]))
        with self._lock:
            self.stats.published += published
            self.stats.batches += 1
            for why, n in drops.items():
                self.stats.dropped[why] += n
        return k

    def _announce(self, stream: str) -> None:
        if len(self._announced) >= 4 * self.max_streams:
            self._announced.clear()
        self._announced.add(stream)
        try:
            assert self.on_first_forecast is not None
            self.on_first_forecast(stream)
        except Exception as exc:  # one line, no traceback: the journal must stay readable
            self._warnings.warn(
                "announce_failed", "announce_failed", stream=stream[:64], detail=f"{type(exc).__name__}: {exc}"[:200]
            )

    def expire_idle(self) -> list[str]:
        """Forget streams idle longer than ``idle_timeout_s`` (worker thread)."""
        if self.idle_timeout_s is None:
            return []
        gone = self.pool.expire_idle(self.idle_timeout_s, self._clock())
        if gone:
            self._announced.difference_update(gone)
            event(log, logging.INFO, "streams_expired", count=len(gone), idle_timeout_s=self.idle_timeout_s)
        return gone

    def replace_model(self, model: Model) -> None:
        """Serve ``model`` from now on (worker thread). Same bundle id: the states carry over; else a fresh pool."""
        if self.pool.compatible(model):
            self.pool.rebind(model)
        else:
            self.pool = self._new_pool(model)
            self._announced.clear()
        self.model = model
        self._features = model.manifest.features
        self._encoder = ForecastEncoder(model.id, model.backend_name, limit=self._cache_size)

    def _new_pool(self, model: Model) -> StreamPool:
        s = self.settings
        return model.pool(
            s.max_streams,
            idle_timeout_s=s.idle_timeout_s,
            use_receive_time=s.use_receive_time,
            max_abs_value=s.max_abs_value,
            max_id_bytes=s.max_id_bytes,
            adaptation=self.adaptation(model) if self.adaptation is not None else None,
        )

    def snapshot(self, *, mark: bool = False) -> dict[str, Any]:
        """Stats plus pool facts, JSON-ready."""
        self.stats.extra.update(
            model=self.model.id,
            backend=self.model.backend_name,
            gap_resets=self.pool.gap_resets,
            expired=self.pool.expired,
            anomalies=self.pool.anomalies,
        )
        return self.stats.snapshot(queued=len(self._queue), streams=len(self.pool), mark=mark)

    # -- the thread ----------------------------------------------------------------------------
    def add_periodic(self, name: str, interval_s: float, fn: Callable[[], object]) -> None:
        """Run ``fn`` on the worker thread every ``interval_s`` seconds (exceptions logged)."""
        self._periodic.append(_Periodic(name, interval_s, fn))

    def call_soon(self, fn: Callable[[], Any]) -> Future[Any]:
        """Run ``fn`` on the worker thread between batches (inline when no thread runs)."""
        fut: Future[Any] = Future()
        if self._thread is None or not self._thread.is_alive():
            try:
                fut.set_result(fn())
            except BaseException as exc:  # handed to the caller
                fut.set_exception(exc)
            return fut
        with self._lock:
            self._calls.append((fn, fut))
            self._wake.notify()
        return fut

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="edge-gru-worker", daemon=True)
        self._thread.start()

    def stop(self, drain: bool = True, timeout: float | None = 30.0) -> None:
        """Stop the thread; with ``drain`` it first processes every reading already queued."""
        thread = self._thread
        with self._lock:
            self._stopping = True
            self._drain = drain
            self._wake.notify()
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():  # stuck in a batch: leave the pool to it rather than race it
                event(log, logging.ERROR, "worker_stuck", timeout_s=timeout, queued=len(self._queue))
                return
        self._thread = None
        if drain:
            while self.process_available():
                pass
        self._run_calls()

    def _run_calls(self) -> None:
        while self._calls:
            with self._lock:
                if not self._calls:
                    break
                fn, fut = self._calls.popleft()
            try:
                fut.set_result(fn())
            except BaseException as exc:  # handed to the caller
                fut.set_exception(exc)

    def _run_periodic(self) -> float:
        """Run due tasks; returns seconds until the next one is due."""
        now = time.monotonic()
        wait = 1.0
        for task in self._periodic:
            if now >= task.due:
                try:
                    task.fn()
                except Exception:  # a failing task is logged and retried next time
                    log.exception("periodic_task_failed", extra={"fields": {"task": task.name}})
                task.due += task.interval_s
                if task.due <= now:  # fell behind (a long batch, a suspended device): no catch-up burst
                    task.due = now + task.interval_s
            wait = min(wait, task.due - now)
        return max(wait, 0.0)

    def _run(self) -> None:
        while True:
            self.last_loop = time.monotonic()
            try:
                n = self.process_available()
            except Exception:  # the worker thread must outlive any one batch
                log.exception("batch_failed")
                n = 1
            if self._calls:
                self._run_calls()
            wait = self._run_periodic()
            if self._stopping:
                if self._drain and self._queue:
                    continue
                return
            if n == 0:
                with self._lock:
                    if not self._queue and not self._calls and not self._stopping:
                        self._idle = True
                        self._wake.wait(wait)
                        self._idle = False
