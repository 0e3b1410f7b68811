"""The run's messages in send order, as the payload bytes a sensor would publish.

All streams' messages are merged by the time they are sent (seconds since each stream's
first reading), keeping each stream's own order, and grouped into ticks: the messages of
one tick are sent together and then the daemon's worker drains its queue.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sim.faults import ACCEPT, Emitted
from sim.profiles import Stream


def encode_reading(value: float, ts: float) -> bytes:
    """The JSON payload a sensor publishes: ``{"value": 21.5, "ts": 1767225600.0}``.

    ``repr`` is the shortest text that parses back to the same float, so the daemon sees
    exactly the simulated value. NaN is written as JSON's common ``NaN`` extension.
    """
    v = repr(float(value)) if math.isfinite(value) else "NaN"
    return b'{"value": %s, "ts": %s}' % (v.encode(), repr(float(ts)).encode())


@dataclass
class Schedule:
    """Every message of a run, in send order, with its ground truth."""

    streams: list[Stream]
    stream: np.ndarray  # (M,) int32 index into ``streams``
    elapsed: np.ndarray  # (M,) float64 send time, seconds since the run's start
    ts: np.ndarray  # (M,) float64 payload timestamp
    values: np.ndarray  # (M,) float64 payload value (NaN for NaN and garbage messages)
    fates: np.ndarray  # (M,) int8 what the daemon should do with it (sim.faults.FATES)
    payloads: list[bytes]
    ticks: np.ndarray  # (K+1,) message index where each tick starts, plus M
    injected: dict[str, int]

    def __len__(self) -> int:
        return int(self.stream.size)

    @property
    def names(self) -> list[str]:
        return [s.stream for s in self.streams]

    def accepted(self, k: int) -> np.ndarray:
        """Indices of stream ``k``'s messages the pool should accept, in arrival order."""
        return np.flatnonzero((self.stream == k) & (self.fates == ACCEPT))


def build_schedule(streams: Sequence[Stream], emitted: Sequence[Emitted]) -> Schedule:
    counts = [e.elapsed.size for e in emitted]
    stream = np.repeat(np.arange(len(emitted), dtype=np.int32), counts)
    seq = np.concatenate([np.arange(c) for c in counts]) if counts else np.zeros(0, dtype=np.int64)
    elapsed = np.concatenate([e.elapsed for e in emitted]) if counts else np.zeros(0)
    order = np.lexsort((seq, stream, elapsed))
    ts = np.concatenate([e.ts for e in emitted])[order] if counts else np.zeros(0)
    values = np.concatenate([e.values for e in emitted])[order] if counts else np.zeros(0)
    fates = np.concatenate([e.fates for e in emitted])[order] if counts else np.zeros(0, np.int8)
    garbage = {}
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    for k, e in enumerate(emitted):
        for local, payload in e.garbage.items():
            garbage[int(offsets[k] + local)] = payload
    inverse = np.empty_like(order)
    inverse[order] = np.arange(order.size)
    garbage_at = {int(inverse[i]): p for i, p in garbage.items()}
    payloads = [
        garbage_at[i] if i in garbage_at else encode_reading(v, t)
        for i, (v, t) in enumerate(zip(values.tolist(), ts.tolist(), strict=True))
    ]
    el = elapsed[order]
    starts = np.flatnonzero(np.r_[True, el[1:] != el[:-1]]) if el.size else np.zeros(0, np.int64)
    injected: dict[str, int] = {}
    for e in emitted:
        for name, n in e.injected.items():
            injected[name] = injected.get(name, 0) + n
    return Schedule(
        list(streams),
        stream[order],
        el,
        ts,
        values,
        fates,
        payloads,
        np.r_[starts, el.size].astype(np.int64),
        injected,
    )
