"""Seeded sensor stream generators.

Each profile turns a random generator and a sample grid into readings with the shape of a
real kind of sensor. Stream ``k`` of a run draws from ``numpy.random.default_rng([seed, k])``,
so a stream's readings do not depend on how many other streams run beside it.

>>> import numpy as np
>>> s = synthesize("daily", rng=np.random.default_rng(0), samples=288, period_s=300.0, start=0.0)
>>> s.shape
(288,)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from edge_gru.errors import ConfigError
from sim.replay import load_column

DAY = 86_400.0
WEEK = 7 * DAY
START_TS = 1_767_225_600.0  # 2026-01-01T00:00:00Z: synthetic streams start here, so runs are reproducible


def _sine(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    """A room temperature: a sinusoid of random period (1-6 h) with white noise."""
    period = rng.uniform(3_600.0, 6 * 3_600.0)
    level, amp = rng.uniform(15.0, 25.0), rng.uniform(1.0, 4.0)
    return level + amp * np.sin(2 * np.pi * t / period + rng.uniform(0, 2 * np.pi)) + rng.normal(0, 0.1 * amp, t.size)


def _random_walk(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    """A pressure or price-like signal: Gaussian steps, no mean reversion."""
    return rng.uniform(990.0, 1030.0) + np.cumsum(rng.normal(0.0, rng.uniform(0.05, 0.5), t.size))


def _daily(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    """Building power: low at night, a morning and an evening peak, noise."""
    hour = (t % DAY) / 3_600.0
    base, amp = rng.uniform(2.0, 10.0), rng.uniform(1.0, 5.0)
    shape = np.exp(-(((hour - 8.0) / 2.0) ** 2)) + 1.3 * np.exp(-(((hour - 19.0) / 2.5) ** 2))
    return base + amp * shape + rng.normal(0, 0.05 * amp, t.size)


def _weekly(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    """Office load: a working-hours plateau on weekdays, almost flat at weekends."""
    hour = (t % DAY) / 3_600.0
    weekday = ((t // DAY) + 3) % 7 < 5  # 1970-01-01 was a Thursday
    base, amp = rng.uniform(20.0, 60.0), rng.uniform(10.0, 40.0)
    office = 1.0 / (1.0 + np.exp(-(hour - 8.0) * 2.0)) * 1.0 / (1.0 + np.exp((hour - 18.0) * 2.0))
    return base + amp * office * np.where(weekday, 1.0, 0.15) + rng.normal(0, 0.03 * amp, t.size)


def _drift(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    """An ageing sensor: a slow linear drift under a daily cycle and noise."""
    rate = rng.uniform(-2.0, 2.0) / DAY
    amp = rng.uniform(0.5, 2.0)
    return (
        rng.uniform(40.0, 60.0)
        + rate * (t - t[0])
        + amp * np.sin(2 * np.pi * t / DAY + rng.uniform(0, 2 * np.pi))
        + rng.normal(0, 0.1 * amp, t.size)
    )


def _step(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    """A set-point or occupancy-driven signal: levels that change abruptly every few hours."""
    n = t.size
    changes = np.flatnonzero(rng.random(n) < 1.0 / max(rng.uniform(20.0, 80.0), 1.0))
    levels = rng.uniform(0.0, 100.0, changes.size + 1)
    idx = np.searchsorted(changes, np.arange(n), side="right")
    return levels[idx] + rng.normal(0, 0.5, n)


GENERATORS: dict[str, Callable[[np.random.Generator, np.ndarray], np.ndarray]] = {
    "sine": _sine,
    "random_walk": _random_walk,
    "daily": _daily,
    "weekly": _weekly,
    "drift": _drift,
    "step": _step,
}
STANDARD_PROFILES: tuple[str, ...] = tuple(GENERATORS)
REPLAY = "replay"


@dataclass(frozen=True)
class Series:
    """One stream's clean readings, before faults: what a healthy sensor would send."""

    stream: str
    profile: str
    ts: np.ndarray  # (T,) float64 epoch seconds, increasing
    values: np.ndarray  # (T,) float64


def synthesize(profile: str, *, rng: np.random.Generator, samples: int, period_s: float, start: float) -> np.ndarray:
    """``samples`` readings of ``profile`` on a grid of ``period_s`` seconds from ``start``."""
    if profile not in GENERATORS:
        raise ConfigError(f"unknown profile {profile!r}; choose from {', '.join(STANDARD_PROFILES)}")
    t = start + period_s * np.arange(samples, dtype=np.float64)
    return np.asarray(GENERATORS[profile](rng, t), dtype=np.float64)


@dataclass(frozen=True)
class ReplaySource:
    """A CSV column to replay as one stream (``--replay FILE --column NAME``)."""

    path: str
    column: str
    time_column: str | None = None
    stream: str | None = None


def build_streams(
    *,
    streams: int,
    profiles: Sequence[str],
    samples: int,
    period_s: float,
    seed: int,
    replays: Sequence[ReplaySource] = (),
    replay_samples: int | None = None,
) -> list[Series]:
    """The run's streams: ``streams`` synthetic ones cycling through ``profiles``, then one per replay source."""
    unknown = [p for p in profiles if p not in GENERATORS]
    if unknown:
        raise ConfigError(f"unknown profile {unknown[0]!r}; choose from {', '.join(STANDARD_PROFILES)}")
    if streams and not profiles:
        raise ConfigError("profiles is empty; name at least one profile or set streams to 0")
    if samples < 2 and streams:
        raise ConfigError(f"the run has {samples} samples per stream; make the duration at least 2 periods")
    out: list[Series] = []
    counts: dict[str, int] = {}
    t = START_TS + period_s * np.arange(samples, dtype=np.float64)
    for k in range(streams):
        profile = profiles[k % len(profiles)]
        counts[profile] = counts.get(profile, 0) + 1
        rng = np.random.default_rng([seed, k])
        values = synthesize(profile, rng=rng, samples=samples, period_s=period_s, start=START_TS)
        out.append(Series(f"{profile}-{counts[profile]:02d}", profile, t, values))
    names = {s.stream for s in out}
    for source in replays:
        col = load_column(source.path, source.column, time_column=source.time_column, limit=replay_samples)
        name = source.stream or _slug(f"{col.path.stem}-{col.column}")
        base, n = name, 1
        while name in names:
            n += 1
            name = f"{base}-{n}"
        names.add(name)
        out.append(Series(name, f"{REPLAY}:{name}", col.ts, col.values))  # each replay is its own row
    return out


def _slug(text: str) -> str:
    """A stream id that is one safe MQTT topic level."""
    keep = [c if c.isalnum() or c in "-_." else "_" for c in text]
    return "".join(keep).strip("_") or "replay"
