"""Per-stream state and every per-stream rule that changes a forecast.

The daemon, the simulator and ``evaluate`` all feed readings through :class:`StreamPool`,
so they agree by construction: warm-up, dropping NaN/inf and out-of-range values,
dropping out-of-order and duplicate timestamps, resetting after a gap, stream and id
limits, idle expiry, receive-time stamping, forecast timestamps and model rebinding live
here and nowhere else (``docs/pool-rules.md``).

>>> import edge_gru
>>> model = edge_gru.load("models/default", backend="numpy")
>>> pool = model.pool(max_streams=100)
>>> out = pool.update(["kitchen"], [21.5], timestamps=[1000.0])
>>> bool(out[0] != out[0])   # NaN while the stream warms up
True
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Protocol

import numpy as np

from edge_gru.adaptation import AdaptationSpec, Adapter, manifest_spec
from edge_gru.atomicfile import atomic_write
from edge_gru.backends.base import Backend
from edge_gru.bundle import Manifest
from edge_gru.errors import CheckpointError
from edge_gru.normalization import StreamNormalizer

CHECKPOINT_VERSION = 1
PERIOD_SAMPLES = 5  # intervals used to learn a stream's sample period when the bundle has none
# The defaults of the pool's limits; the daemon's [streams] section and the simulator read them here.
DEFAULT_MAX_STREAMS = 10_000
# Readings beyond this magnitude are dropped as OUT_OF_RANGE: squared (the causal normalizer's
# variance) they stay near 1e30, far inside float64, and no physical sensor reports them.
DEFAULT_MAX_ABS_VALUE = 1e15
DEFAULT_MAX_ID_BYTES = 256  # UTF-8 bytes of a stream id; longer ids are refused as ID_TOO_LONG


class ServedModel(Protocol):
    """What a pool needs of a model: its bundle's manifest and id, and the backend that steps it."""

    @property
    def id(self) -> str: ...

    @property
    def manifest(self) -> Manifest: ...

    @property
    def backend(self) -> Backend: ...


class Status(IntEnum):
    """What became of one reading. Every reading gets exactly one."""

    FORECAST = 0  # accepted; a forecast was produced
    WARMUP = 1  # accepted into the state; no forecast yet
    NOT_FINITE = 2  # NaN or inf value or timestamp: dropped, state untouched
    OUT_OF_ORDER = 3  # timestamp older than the stream's last one: dropped
    DUPLICATE = 4  # timestamp equal to the stream's last one: dropped
    STREAM_LIMIT = 5  # a new stream while the pool is full: dropped
    OUT_OF_RANGE = 6  # a value beyond ``max_abs_value`` in magnitude: dropped, state untouched
    ID_TOO_LONG = 7  # a new stream whose id exceeds ``max_id_bytes``: dropped, no stream created

    @property
    def reason(self) -> str:
        """The word counted for this status; ``edge_gru.daemon.payload.DropReason`` lists every drop
        reason and refuses at import a status whose word it lacks."""
        return self.name.lower()


@dataclass(frozen=True)
class PoolResult:
    """Per-reading outcome of :meth:`StreamPool.update_detailed`."""

    forecasts: np.ndarray  # (S,) raw units; NaN unless status is FORECAST
    status: np.ndarray  # (S,) uint8 Status codes
    forecast_ts: np.ndarray  # (S,) epoch seconds of the forecast sample; NaN when unknown
    resets: np.ndarray  # (S,) bool: the stream was reset by a gap before this reading
    # adaptation (edge_gru.adaptation); NaN / False when it is off
    lower: np.ndarray | None = None  # (S,) prediction interval of the forecast
    upper: np.ndarray | None = None
    anomaly: np.ndarray | None = None  # (S,) bool: this reading fell far outside its forecast
    # horizon > 1 (a Dense(k) head): (S, k) forecasts of the next k samples, column 0 == forecasts
    values: np.ndarray | None = None


class StreamPool:
    """Hidden states (stateful mode) or ring buffers (window mode) for up to ``max_streams`` streams."""

    def __init__(
        self,
        model: ServedModel,
        max_streams: int = DEFAULT_MAX_STREAMS,
        *,
        idle_timeout_s: float | None = None,
        use_receive_time: bool = False,
        max_abs_value: float = DEFAULT_MAX_ABS_VALUE,
        max_id_bytes: int = DEFAULT_MAX_ID_BYTES,
        adaptation: AdaptationSpec | None = None,
    ) -> None:
        if max_streams < 1:
            raise ValueError("max_streams must be >= 1")
        if not max_abs_value > 0:
            raise ValueError("max_abs_value must be > 0")
        if max_id_bytes < 1:
            raise ValueError("max_id_bytes must be >= 1")
        self.model = model
        manifest = model.manifest
        self.max_streams = int(max_streams)
        self.idle_timeout_s = idle_timeout_s
        self.use_receive_time = use_receive_time
        self.max_abs_value = float(max_abs_value)
        self.max_id_bytes = int(max_id_bytes)
        self.stateful = manifest.mode == "stateful"
        self.window = manifest.window
        self.features = manifest.input_features
        self.state_size = manifest.state_size  # the backend's opaque per-stream state row
        self.horizon = manifest.horizon
        self.warmup = max(manifest.warmup, 1) if self.stateful else max(manifest.warmup, manifest.window)
        self.period = manifest.sample_period_s
        self.gap_factor = manifest.gap_factor
        self.normalizer = StreamNormalizer(manifest.normalization, self.features, manifest.target_index)
        self.gap_resets = 0
        self.expired = 0
        # None: the bundle's own setting (off unless its manifest has an enabled 'adaptation')
        self.adaptation = manifest_spec(manifest.extra) if adaptation is None else adaptation
        self.adapter = self._new_adapter() if self.adaptation.enabled else None
        self.anomalies = 0
        self._ids: dict[str, int] = {}
        self._row_ids: list[str | None] = []
        self._free: list[int] = []
        self._capacity = 0
        self._alloc(min(self.max_streams, 64))

    def _new_adapter(self) -> Adapter:
        adapter = Adapter(self.adaptation)
        # Only beside the JIT kernels: numba is imported anyway. Ahead-of-time kernels exist so that the
        # daemon never loads numba/llvmlite (~100 MiB); there the adaptation runs as numpy.
        if self.model.backend.name == "numba" and getattr(self.model.backend, "kernel_kind", "") == "jit":
            adapter.compile()
        return adapter

    # -- storage ---------------------------------------------------------------------------
    def _alloc(self, capacity: int) -> None:
        old = self._capacity
        if capacity <= old:
            return

        def grown(arr: np.ndarray | None, shape: tuple[int, ...], dtype: type, fill: float = 0.0) -> np.ndarray:
            new: np.ndarray = np.full((capacity, *shape), fill, dtype=dtype)
            if arr is not None:
                new[:old] = arr
            return new

        get = self.__dict__.get
        self.h = grown(get("h"), (self.state_size,) if self.stateful else (0,), np.float32)
        self.ring = grown(get("ring"), (0 if self.stateful else self.window, self.features), np.float32)
        self.count = grown(get("count"), (), np.int64)
        self.last_ts = grown(get("last_ts"), (), np.float64, np.nan)
        self.learned_period = grown(get("learned_period"), (), np.float64, np.nan)
        self.intervals = grown(get("intervals"), (PERIOD_SAMPLES,), np.float64, np.nan)
        self.last_seen = grown(get("last_seen"), (), np.float64)
        self.normalizer.grow(capacity)
        if self.adapter is not None:
            self.adapter.grow(capacity)
        self._row_ids.extend([None] * (capacity - old))
        self._free.extend(range(capacity - 1, old - 1, -1))
        self._capacity = capacity

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, stream_id: object) -> bool:
        return stream_id in self._ids

    @property
    def stream_ids(self) -> list[str]:
        return list(self._ids)

    def _clear_rows(self, rows: np.ndarray) -> None:
        self.h[rows] = 0.0
        self.ring[rows] = 0.0
        self.count[rows] = 0
        if self.adapter is not None:
            self.adapter.reset(rows, full=False)

    def _new_row(self, stream_id: str, now: float) -> int:
        if not self._free:
            if self._capacity < self.max_streams:
                self._alloc(min(self.max_streams, max(64, 2 * self._capacity)))
            elif not self._evict_idle(now):
                return -1
        row = self._free.pop()
        self._ids[stream_id] = row
        self._row_ids[row] = stream_id
        rows = np.array([row])
        self._clear_rows(rows)
        self.normalizer.reset(rows)
        if self.adapter is not None:
            self.adapter.reset(rows)
        self.last_ts[row] = np.nan
        self.learned_period[row] = np.nan
        self.intervals[row] = np.nan
        self.last_seen[row] = now
        return row

    def _evict_idle(self, now: float) -> bool:
        """Make room for a new stream by expiring the least recently seen idle one."""
        if self.idle_timeout_s is None or not self._ids:
            return False
        live = np.fromiter(self._ids.values(), dtype=np.int64)
        oldest = live[np.argmin(self.last_seen[live])]
        if now - self.last_seen[oldest] < self.idle_timeout_s:
            return False
        self._remove_row(int(oldest))
        self.expired += 1
        return True

    def _remove_row(self, row: int) -> None:
        stream_id = self._row_ids[row]
        if stream_id is not None:
            del self._ids[stream_id]
        self._row_ids[row] = None
        self._free.append(row)

    def remove(self, stream_id: str) -> bool:
        """Forget a stream; returns whether it existed."""
        row = self._ids.get(stream_id)
        if row is None:
            return False
        self._remove_row(row)
        return True

    def reset(self, stream_id: str) -> None:
        """Restart a stream's warm-up (hidden state or window), keeping its normalization."""
        row = self._ids.get(stream_id)
        if row is not None:
            self._clear_rows(np.array([row]))

    def expire_idle(self, max_idle_s: float, now: float | None = None) -> list[str]:
        """Remove streams not seen for ``max_idle_s`` seconds; returns their ids."""
        now = time.time() if now is None else now
        gone = [sid for sid, row in self._ids.items() if now - self.last_seen[row] > max_idle_s]
        for sid in gone:
            self._remove_row(self._ids[sid])
        self.expired += len(gone)
        return gone

    # -- the model -------------------------------------------------------------------------
    def compatible(self, model: ServedModel) -> bool:
        """Whether this pool's states mean the same to ``model``: the same bundle (e.g. another backend)."""
        return model.id == self.model.id

    def rebind(self, model: ServedModel) -> None:
        """Serve the streams' states with ``model`` from now on; a different bundle raises ValueError."""
        if not self.compatible(model):
            raise ValueError(
                f"bundle {model.id!r} cannot take over the states of bundle {self.model.id!r}; start a new pool"
            )
        self.model = model

    # -- the per-sample API ------------------------------------------------------------------
    def update(
        self,
        stream_ids: Sequence[str],
        values: Sequence[float] | np.ndarray,
        timestamps: Sequence[float] | np.ndarray | None = None,
    ) -> np.ndarray:
        """One reading per entry -> forecast of each stream's next sample in raw units (NaN while warming up)."""
        return self.update_detailed(stream_ids, values, timestamps).forecasts

    def update_detailed(
        self,
        stream_ids: Sequence[str],
        values: Sequence[float] | np.ndarray,
        timestamps: Sequence[float] | np.ndarray | None = None,
        *,
        now: float | None = None,
    ) -> PoolResult:
        """Like :meth:`update`, with a :class:`Status` per reading and the forecast's timestamp.

        ``now`` (epoch seconds, default the wall clock) is what idle expiry measures against.
        A stream id may appear several times; its readings are applied in order.
        """
        n = len(stream_ids)
        x = np.asarray(values, dtype=np.float64)
        if x.ndim == 1 and self.features == 1:
            x = x[:, None]
        if x.shape != (n, self.features):
            raise ValueError(
                f"values has shape {np.shape(values)}; expected ({n},) or ({n}, {self.features}) for "
                f"{n} stream ids and a model with {self.features} input feature(s)"
            )
        ts = None if timestamps is None else np.asarray(timestamps, dtype=np.float64).reshape(-1)
        if ts is not None and ts.shape[0] != n:
            raise ValueError(f"timestamps has {ts.shape[0]} entries for {n} stream ids")
        now = time.time() if now is None else float(now)

        status = np.full(n, Status.FORECAST, dtype=np.uint8)
        forecasts = np.full(n, np.nan)
        forecast_ts = np.full(n, np.nan)
        resets = np.zeros(n, dtype=bool)
        lower = np.full(n, np.nan)
        upper = np.full(n, np.nan)
        anomaly = np.zeros(n, dtype=bool)
        steps = np.full((n, self.horizon), np.nan) if self.horizon > 1 else None
        bounds = (lower, upper, anomaly)

        finite = np.asarray(np.isfinite(x).all(axis=1))
        if ts is not None:
            finite &= np.isfinite(ts)
        in_range = np.asarray((np.abs(x) <= self.max_abs_value).all(axis=1))
        usable = finite & in_range
        rows = np.empty(n, dtype=np.int64)
        get = self._ids.get
        max_chars = self.max_id_bytes // 4  # ids this short fit in max_id_bytes whatever their characters
        for i, sid in enumerate(stream_ids):
            row = get(sid)
            if row is None:
                if len(sid) > max_chars and len(sid.encode("utf-8", "surrogatepass")) > self.max_id_bytes:
                    row = -3
                else:
                    # A stream whose first reading is unusable is not created: it would only hold a slot.
                    row = self._new_row(sid, now) if usable[i] else -2
            rows[i] = row
        status[rows == -1] = Status.STREAM_LIMIT
        status[rows == -3] = Status.ID_TOO_LONG
        judged = (rows >= 0) | (rows == -2)
        status[judged & ~in_range] = Status.OUT_OF_RANGE
        status[judged & ~finite] = Status.NOT_FINITE
        todo = np.flatnonzero(status == Status.FORECAST)
        if todo.size:
            self.last_seen[rows[todo]] = now
        # Values are bounded by max_abs_value, but a fixed normalization with a tiny std may still
        # overflow float32; the non-finite result is handled below, so numpy's warning is noise.
        with np.errstate(over="ignore", invalid="ignore"):
            for idx in _rounds(rows, todo):
                ts_idx = None if ts is None else ts[idx]
                self._apply(idx, rows[idx], x[idx], ts_idx, status, forecasts, forecast_ts, resets, bounds, steps)
        return PoolResult(forecasts, status, forecast_ts, resets, lower, upper, anomaly, steps)

    def update_received(
        self,
        stream_ids: Sequence[str],
        values: np.ndarray,
        timestamps: np.ndarray,
        stamped: np.ndarray,
        *,
        now: float | None = None,
    ) -> PoolResult:
        """Readings as they arrive from the wire: some carry their own timestamp, some only a receive time.

        ``timestamps`` (S,) holds each reading's own time where ``stamped`` (S,) is True and its
        receive time elsewhere. Unstamped readings take part in the timestamp rules (order,
        duplicates, gaps, period learning) only when the pool was made with
        ``use_receive_time``: receive times of messages a broker queued during an outage arrive
        in a burst and would teach the pool a wrong sample period. Readings are applied in
        arrival order, stamped or not. With a bundle sample period, every
        forecast's ``forecast_ts`` is its reading's time (own or receive) plus that period.
        """
        ts = np.asarray(timestamps, dtype=np.float64)
        given = np.asarray(stamped, dtype=bool)
        if self.use_receive_time or given.all():
            r = self.update_detailed(stream_ids, values, ts, now=now)
        elif not given.any():
            r = self.update_detailed(stream_ids, values, None, now=now)
        else:
            n = len(stream_ids)
            status = np.empty(n, dtype=np.uint8)
            forecasts = np.empty(n)
            forecast_ts = np.empty(n)
            resets = np.empty(n, dtype=bool)
            lower, upper, anomaly = np.empty(n), np.empty(n), np.empty(n, dtype=bool)
            steps = np.empty((n, self.horizon)) if self.horizon > 1 else None
            # Runs of stamped and unstamped readings, applied in arrival order: which new stream
            # gets the pool's last free slot must not depend on how readings were batched.
            edges = np.flatnonzero(np.diff(given.astype(np.int8))) + 1
            for idx in np.split(np.arange(n), edges):
                stamped_run = bool(given[idx[0]])
                part = self.update_detailed(
                    [stream_ids[i] for i in idx.tolist()], values[idx], ts[idx] if stamped_run else None, now=now
                )
                status[idx], forecasts[idx] = part.status, part.forecasts
                forecast_ts[idx], resets[idx] = part.forecast_ts, part.resets
                lower[idx], upper[idx], anomaly[idx] = part.lower, part.upper, part.anomaly
                if steps is not None:
                    steps[idx] = part.values
            r = PoolResult(forecasts, status, forecast_ts, resets, lower, upper, anomaly, steps)
        if self.period and not given.all():  # no own ts: the bundle's period still dates the forecast
            fts = np.where(np.isnan(r.forecast_ts), ts + self.period, r.forecast_ts)
            r = dataclasses.replace(r, forecast_ts=fts)
        return r

    def _apply(
        self,
        idx: np.ndarray,
        rows: np.ndarray,
        x: np.ndarray,
        ts: np.ndarray | None,
        status: np.ndarray,
        forecasts: np.ndarray,
        forecast_ts: np.ndarray,
        resets: np.ndarray,
        bounds: tuple[np.ndarray, np.ndarray, np.ndarray],
        steps: np.ndarray | None = None,
    ) -> None:
        """Apply one reading to each of the distinct ``rows``."""
        if ts is not None:
            last = self.last_ts[rows]
            dup = ts == last
            ooo = ts < last
            status[idx[dup]] = Status.DUPLICATE
            status[idx[ooo]] = Status.OUT_OF_ORDER
            keep = ~(dup | ooo)
            idx, rows, x, ts, last = idx[keep], rows[keep], x[keep], ts[keep], last[keep]
            if not idx.size:
                return
            dt = ts - last
            period = np.full(rows.shape, self.period) if self.period else self.learned_period[rows]
            gap = np.isfinite(dt) & np.isfinite(period) & (dt > self.gap_factor * period)
            if gap.any():
                self._clear_rows(rows[gap])
                resets[idx[gap]] = True
                self.gap_resets += int(gap.sum())
            if self.period is None:
                self._learn_period(rows[~gap], dt[~gap])
            self.last_ts[rows] = ts
        adapter = self.adapter
        if adapter is not None:
            t = self.normalizer.target
            flags, hold, replacement = adapter.observe(rows, x[:, t])
            bounds[2][idx] = flags
            self.anomalies += int(flags.sum())
            if hold.any():  # the state advances with the previous forecast instead of the outlier
                x = x.copy()
                x[:, t] = replacement
        z = self.normalizer.transform(rows, x)
        self.count[rows] += 1
        ready = self.count[rows] >= self.warmup
        if self.stateful:
            y = self.model.backend.step(z, self.h, rows)
        else:
            ring = self.ring
            ring[rows, :-1] = ring[rows, 1:]
            ring[rows, -1] = z
            y = np.zeros((rows.shape[0], self.horizon), dtype=np.float32)
            if ready.any():
                y[ready] = self.model.backend.run_windows(ring[rows[ready]])
        if self.horizon == 1:
            raw = self.normalizer.denormalize(rows, y[:, 0])
            broken = ~np.isfinite(raw)
        else:
            raw_steps = np.stack([self.normalizer.denormalize(rows, y[:, k]) for k in range(self.horizon)], axis=1)
            raw = raw_steps[:, 0]
            broken = ~np.isfinite(raw_steps).all(axis=1)
        if broken.any():
            # A reading near the float range (e.g. 1e300) overflowed this stream's state: restart
            # its warm-up (and normalization) rather than keep a NaN state forever.
            self._clear_rows(rows[broken])
            self.normalizer.reset(rows[broken])
            ready &= ~broken
        if adapter is not None:
            raw, lo, hi = adapter.forecast(rows, x[:, self.normalizer.target], np.where(ready, raw, np.nan))
            if broken.any():
                adapter.reset(rows[broken])
            bounds[0][idx[ready]] = lo[ready]
            bounds[1][idx[ready]] = hi[ready]
        forecasts[idx[ready]] = raw[ready]
        if steps is not None:
            steps[idx[ready], 1:] = raw_steps[ready, 1:]
            steps[idx[ready], 0] = raw[ready]  # the published (adapted) first step
        status[idx[~ready]] = Status.WARMUP
        if ts is not None:
            period = np.full(rows.shape, self.period) if self.period else self.learned_period[rows]
            forecast_ts[idx] = ts + period

    def _learn_period(self, rows: np.ndarray, dt: np.ndarray) -> None:
        """Collect a stream's first intervals; their median becomes its sample period."""
        learning = np.isnan(self.learned_period[rows]) & np.isfinite(dt) & (dt > 0)
        for row, d in zip(rows[learning].tolist(), dt[learning].tolist(), strict=True):
            slots = self.intervals[row]
            free = np.flatnonzero(np.isnan(slots))
            slots[free[0]] = d
            if free.size == 1:
                self.learned_period[row] = float(np.median(slots))

    def stream_period(self, stream_id: str) -> float | None:
        """The sample period used for gap detection: the bundle's, or the one learned for this stream."""
        if self.period:
            return self.period
        row = self._ids.get(stream_id)
        value = np.nan if row is None else self.learned_period[row]
        return None if np.isnan(value) else float(value)

    # -- checkpoints -------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write every stream's state atomically: after a crash the file is the old or the new one."""
        rows = np.fromiter(self._ids.values(), dtype=np.int64, count=len(self._ids))
        meta = {
            "version": CHECKPOINT_VERSION,
            "bundle_id": self.model.id,
            "mode": "stateful" if self.stateful else "window",
            "saved_at": time.time(),
            "gap_resets": self.gap_resets,
            "expired": self.expired,
            "anomalies": self.anomalies,
            "adaptation": self.adaptation.to_json() if self.adapter is not None else None,
        }
        arrays = {
            "meta": np.array(json.dumps(meta)),
            "ids": np.array(list(self._ids), dtype=str) if self._ids else np.zeros(0, dtype="<U1"),
            "h": self.h[rows],
            "ring": self.ring[rows],
            "count": self.count[rows],
            "last_ts": self.last_ts[rows],
            "learned_period": self.learned_period[rows],
            "intervals": self.intervals[rows],
            "last_seen": self.last_seen[rows],
            **{k: v[rows] for k, v in self.normalizer.state().items()},
            **(self.adapter.state(rows) if self.adapter is not None else {}),
        }
        buf = io.BytesIO()
        np.savez(buf, **arrays)  # type: ignore[arg-type]
        atomic_write(path, lambda fh: fh.write(buf.getvalue()))

    def load(self, path: str | os.PathLike[str]) -> None:
        """Restore a checkpoint written by :meth:`save` for the same bundle; replaces all streams."""
        where = Path(path)
        try:
            with np.load(where, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
            meta = json.loads(str(arrays["meta"]))
        except Exception as exc:
            raise CheckpointError(f"{where}: not a readable edge-gru checkpoint ({exc})") from exc
        if meta.get("version") != CHECKPOINT_VERSION:
            raise CheckpointError(f"{where}: checkpoint version {meta.get('version')!r} is not supported")
        if meta.get("bundle_id") != self.model.id:
            raise CheckpointError(
                f"{where}: written for bundle {meta.get('bundle_id')!r}, but the loaded bundle is "
                f"{self.model.id!r}; its state does not apply"
            )
        ids = [str(s) for s in arrays["ids"].tolist()]
        n = len(ids)
        if n > self.max_streams:
            raise CheckpointError(f"{where}: holds {n} streams, more than max_streams={self.max_streams}")
        expected = {
            "h": (n, self.h.shape[1]),
            "ring": (n, *self.ring.shape[1:]),
            "norm_mean": (n, self.features),
        }
        for key, shape in expected.items():
            if key not in arrays or arrays[key].shape != shape:
                raise CheckpointError(f"{where}: array {key!r} has the wrong shape for this bundle")
        self._ids.clear()
        self._row_ids = []
        self._free = []
        self._capacity = 0
        for name in ("h", "ring", "count", "last_ts", "learned_period", "intervals", "last_seen"):
            self.__dict__.pop(name, None)
        self.normalizer.mean = self.normalizer.mean[:0]
        self.normalizer.var = self.normalizer.var[:0]
        self.normalizer.count = self.normalizer.count[:0]
        if self.adapter is not None:
            self.adapter = self._new_adapter()
        self._alloc(max(min(self.max_streams, 64), n))
        rows = np.arange(n)
        for name in ("h", "ring", "count", "last_ts", "learned_period", "intervals", "last_seen"):
            getattr(self, name)[rows] = arrays[name]
        self.normalizer.mean[rows] = arrays["norm_mean"]
        self.normalizer.var[rows] = arrays["norm_var"]
        self.normalizer.count[rows] = arrays["norm_count"]
        # Newest raw target reading (causal forecasts are relative to it); older checkpoints lack it.
        self.normalizer.last[rows] = arrays.get("norm_last", arrays["norm_mean"][:, self.normalizer.target])
        self._free = [r for r in self._free if r >= n]
        for row, sid in enumerate(ids):
            self._ids[sid] = row
            self._row_ids[row] = sid
        if self.adapter is not None and meta.get("adaptation") != self.adaptation.to_json():
            # saved with other adaptation settings (or none): the streams keep their model
            # state and learn their combination and intervals afresh
            pass
        elif self.adapter is not None:
            self.adapter.restore(rows, arrays)
        self.gap_resets = int(meta.get("gap_resets", 0))
        self.expired = int(meta.get("expired", 0))
        self.anomalies = int(meta.get("anomalies", 0))


def _rounds(rows: np.ndarray, todo: np.ndarray) -> list[np.ndarray]:
    """Split reading indices into rounds in which every stream appears at most once, in order."""
    if not todo.size:
        return []
    r = rows[todo]
    if np.unique(r).size == r.size:
        return [todo]
    order = np.argsort(r, kind="stable")
    sorted_rows = r[order]
    starts = np.r_[True, sorted_rows[1:] != sorted_rows[:-1]]
    group_start = np.maximum.accumulate(np.where(starts, np.arange(r.size), 0))
    rank = np.empty(r.size, dtype=np.int64)
    rank[order] = np.arange(r.size) - group_start
    return [todo[rank == k] for k in range(int(rank.max()) + 1)]
