"""The simulator's streams: synthetic ones drawn from :mod:`edge_gru.profiles`, and CSV replays.

Stream ``k`` of a run draws from ``numpy.random.default_rng([seed, k])``, so a stream's
readings do not depend on how many other streams run beside it. The profiles themselves
(their names and maths) are defined once, in :mod:`edge_gru.profiles`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edge_gru.errors import ConfigError
from edge_gru.profiles import DAY, GENERATORS, STANDARD_PROFILES, START_TS, WEEK, synthesize
from edge_gru.series import Series
from sim.replay import load_column

__all__ = ["DAY", "GENERATORS", "REPLAY", "STANDARD_PROFILES", "START_TS", "WEEK", "Stream", "synthesize"]

REPLAY = "replay"


@dataclass(frozen=True)
class Stream:
    """One simulated stream: its id, its profile, and its clean readings (before faults) as a one-feature series."""

    stream: str
    profile: str
    series: Series  # times set, every row present
    file_dropped: tuple[tuple[str, int], ...] = ()  # replays: file rows the pool's rules dropped, per reason

    @property
    def ts(self) -> np.ndarray:
        """(T,) float64 epoch seconds, increasing."""
        assert self.series.times is not None
        return self.series.times

    @property
    def values(self) -> np.ndarray:
        """(T,) float64 readings."""
        return self.series.target_values

    @property
    def period(self) -> float:
        """The stream's sample period (median step): a forecast is scored against a reading this far ahead."""
        return self.series.period if self.series.period else float("inf")

    @classmethod
    def regular(cls, stream: str, profile: str, ts: np.ndarray, values: np.ndarray, period_s: float) -> Stream:
        """A stream on a regular grid with every reading present: one segment, no per-row scan."""
        n = int(values.shape[0])
        series = Series(f"{profile}:{stream}", ("value",), values.reshape(n, 1), ts, period_s, ((0, n),) if n else ())
        return cls(stream, profile, series)


@dataclass(frozen=True)
class ReplaySource:
    """A CSV column to replay as one stream (``--replay FILE --column NAME``)."""

    path: str
    column: str
    time_column: str | None = None
    stream: str | None = None
    strict: bool = False  # refuse duplicate and out-of-order rows instead of dropping them as the daemon does


def build_streams(
    *,
    streams: int,
    profiles: Sequence[str],
    samples: int,
    period_s: float,
    seed: int,
    replays: Sequence[ReplaySource] = (),
    replay_samples: int | None = None,
) -> list[Stream]:
    """The run's streams: ``streams`` synthetic ones cycling through ``profiles``, then one per replay source."""
    unknown = [p for p in profiles if p not in GENERATORS]
    if unknown:
        raise ConfigError(f"unknown profile {unknown[0]!r}; choose from {', '.join(STANDARD_PROFILES)}")
    if streams and not profiles:
        raise ConfigError("profiles is empty; name at least one profile or set streams to 0")
    if samples < 2 and streams:
        raise ConfigError(f"the run has {samples} samples per stream; make the duration at least 2 periods")
    out: list[Stream] = []
    counts: dict[str, int] = {}
    t = START_TS + period_s * np.arange(samples, dtype=np.float64)
    for k in range(streams):
        profile = profiles[k % len(profiles)]
        counts[profile] = counts.get(profile, 0) + 1
        rng = np.random.default_rng([seed, k])
        values = synthesize(profile, rng=rng, samples=samples, period_s=period_s, start=START_TS)
        out.append(Stream.regular(f"{profile}-{counts[profile]:02d}", profile, t, values, period_s))
    names = {s.stream for s in out}
    for source in replays:
        col = load_column(
            source.path, source.column, time_column=source.time_column, limit=replay_samples, strict=source.strict
        )
        name = source.stream or _slug(f"{col.path.stem}-{col.column}")
        base, n = name, 1
        while name in names:
            n += 1
            name = f"{base}-{n}"
        names.add(name)
        readings = Series.from_arrays(col.values, times=col.ts, source=str(col.path))
        dropped = tuple(sorted(col.series.dropped.items()))
        out.append(Stream(name, f"{REPLAY}:{name}", readings, dropped))  # each replay is its own row
    return out


def _slug(text: str) -> str:
    """A stream id that is one safe MQTT topic level."""
    keep = [c if c.isalnum() or c in "-_." else "_" for c in text]
    return "".join(keep).strip("_") or "replay"
