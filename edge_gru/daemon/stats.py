"""Counters and latency quantiles of the daemon, cheap enough to update per reading.

Accounting invariant: every submitted reading ends as exactly one of ``published`` or one
drop reason (a :class:`~edge_gru.daemon.payload.DropReason`), or is still queued
(``received == published + sum(dropped) + queued``).
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from typing import Any

import numpy as np

from edge_gru.daemon.payload import DropReason
from edge_gru.procstat import rss_bytes

LATENCY_SAMPLES = 8192


class Stats:
    """What the stats topic reports: rates, drops by reason, queue depth, latency p50/p99, RSS."""

    def __init__(self, *, clock: Any = time.time) -> None:
        self._clock = clock
        self.started = clock()
        self.received = 0
        self.published = 0
        self.dropped: Counter[str] = Counter()  # keyed by DropReason members (plain words compare equal)
        self.batches = 0
        self.reconnects = 0
        self._lat = np.zeros(LATENCY_SAMPLES)
        self._lat_n = 0  # total samples ever written; the ring holds the last LATENCY_SAMPLES
        self._lat_mark = 0  # _lat_n at the last snapshot
        self._last_snapshot = (self.started, 0, 0)
        self.extra: dict[str, Any] = {}

    def drop(self, reason: DropReason, n: int = 1) -> None:
        self.dropped[reason] += n

    def record_latency(self, seconds: np.ndarray) -> None:
        """Receive -> publish latencies of one batch (worker thread only)."""
        k = seconds.shape[0]
        if not k:
            return
        if k >= LATENCY_SAMPLES:
            self._lat[:] = seconds[-LATENCY_SAMPLES:]
        else:
            start = self._lat_n % LATENCY_SAMPLES
            end = start + k
            if end <= LATENCY_SAMPLES:
                self._lat[start:end] = seconds
            else:
                cut = LATENCY_SAMPLES - start
                self._lat[start:] = seconds[:cut]
                self._lat[: k - cut] = seconds[cut:]
        self._lat_n += k

    def latency_quantiles(self, *, since_mark: bool = False) -> dict[str, float | None]:
        """p50/p99/max in milliseconds over the recent samples (since the last snapshot if asked)."""
        total = self._lat_n
        n = min(total - self._lat_mark if since_mark else total, LATENCY_SAMPLES, total)
        if n <= 0:
            return {"p50_ms": None, "p99_ms": None, "max_ms": None}
        end = total % LATENCY_SAMPLES
        idx = (np.arange(end - n, end)) % LATENCY_SAMPLES
        sample = self._lat[idx] * 1e3
        p50, p99 = np.percentile(sample, [50, 99])
        return {"p50_ms": round(float(p50), 3), "p99_ms": round(float(p99), 3), "max_ms": round(float(sample.max()), 3)}

    def snapshot(self, *, queued: int = 0, streams: int = 0, mark: bool = False) -> dict[str, Any]:
        """A JSON-ready summary; with ``mark`` the rates and latencies cover the time since the last marked one."""
        now = self._clock()
        t0, received0, published0 = self._last_snapshot
        dt = max(now - t0, 1e-9)
        snap: dict[str, Any] = {
            "ts": now,
            "uptime_s": round(now - self.started, 3),
            "received": self.received,
            "published": self.published,
            "dropped": {str(k): v for k, v in sorted(self.dropped.items())},
            "dropped_total": sum(self.dropped.values()),
            "queued": queued,
            "streams": streams,
            "in_per_s": round((self.received - received0) / dt, 2),
            "out_per_s": round((self.published - published0) / dt, 2),
            "latency": self.latency_quantiles(since_mark=mark),
            "batches": self.batches,
            "reconnects": self.reconnects,
            "rss_mib": round(rss_bytes() / 2**20, 1),
            "tensorflow_loaded": sys.modules.get("tensorflow") is not None,
            **self.extra,
        }
        if mark:
            self._last_snapshot = (now, self.received, self.published)
            self._lat_mark = self._lat_n
        return snap
