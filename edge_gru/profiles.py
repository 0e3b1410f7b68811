"""The synthetic sensor profiles of edge-gru: one definition of each, by name.

Two families, each name defined once:

- the **simulator profiles** (:data:`STANDARD_PROFILES`: ``sine``, ``random_walk``,
  ``daily``, ``weekly``, ``drift``, ``step``), functions of a random generator and real
  sample times, with parameters drawn per stream; ``edge-gru simulate`` reports on them and
  the default model is trained on streams of them;
- the **training mix** (:data:`TRAINING_PROFILES`), fixed-shape series at their own sample
  periods (a 96-sample sine, an AR(1) walk, an outdoor daily cycle, an office week, a
  linear drift, set-point steps), which the default model is also trained on and tests use.

Every profile is deterministic for a given generator.

>>> s = synthesize("daily", rng=np.random.default_rng(0), samples=288, period_s=300.0, start=0.0)
>>> s.shape
(288,)
>>> profiles = training_profiles(n=500, seed=1)
>>> sorted(profiles)
['ar_walk', 'linear_drift', 'office_weekly', 'outdoor_daily', 'setpoint_steps', 'sine_96']
>>> bool(profiles["sine_96"].values.shape == (500, 1))
True
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from edge_gru.errors import ConfigError
from edge_gru.series import Series

DAY = 86_400.0
WEEK = 7 * DAY
START_TS = 1_767_225_600.0  # 2026-01-01T00:00:00Z: simulator streams start here, so runs are reproducible
TRAINING_START = 1_700_000_000.0  # 2023-11-14, a fixed epoch so the training mix is reproducible


# -- simulator profiles: f(rng, sample times) ------------------------------------------------
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


def synthesize(profile: str, *, rng: np.random.Generator, samples: int, period_s: float, start: float) -> np.ndarray:
    """``samples`` readings of simulator profile ``profile`` on a grid of ``period_s`` seconds from ``start``."""
    if profile not in GENERATORS:
        raise ConfigError(f"unknown profile {profile!r}; choose from {', '.join(STANDARD_PROFILES)}")
    t = start + period_s * np.arange(samples, dtype=np.float64)
    return np.asarray(GENERATORS[profile](rng, t), dtype=np.float64)


# -- the training mix: f(n, rng) at a fixed sample period -------------------------------------
def _ar1(rng: np.random.Generator, n: int, phi: float, sigma: float) -> np.ndarray:
    e = rng.normal(0.0, sigma, n)
    out = np.empty(n)
    acc = 0.0
    for i in range(n):
        acc = phi * acc + e[i]
        out[i] = acc
    return out


def _sine_96(n: int, rng: np.random.Generator) -> np.ndarray:
    """A 96-sample sine (e.g. 15-min samples of a daily rhythm) plus white noise."""
    t = np.arange(n)
    return 20.0 + 5.0 * np.sin(2 * np.pi * t / 96.0 + rng.uniform(0, 2 * np.pi)) + rng.normal(0, 0.3, n)


def _ar_walk(n: int, rng: np.random.Generator) -> np.ndarray:
    """A slowly mean-reverting walk (a room or water temperature) seen through sensor noise."""
    return 50.0 + _ar1(rng, n, 0.995, 0.2) + rng.normal(0, 0.1, n)


def _outdoor_daily(n: int, rng: np.random.Generator) -> np.ndarray:
    """An outdoor temperature at 5-min samples: daily cycle, weather wander, noise."""
    t = np.arange(n)
    return (
        12.0
        + 6.0 * np.sin(2 * np.pi * t / 288.0 - 2.0)
        + 2.0 * np.sin(4 * np.pi * t / 288.0)
        + _ar1(rng, n, 0.99, 0.1)
        + rng.normal(0, 0.1, n)
    )


def _office_weekly(n: int, rng: np.random.Generator) -> np.ndarray:
    """An office's hourly power: working-hours bump on weekdays, quiet weekends."""
    t = np.arange(n)
    hour = t % 24
    day = (t // 24) % 7
    working = ((hour >= 8) & (hour < 18) & (day < 5)).astype(float)
    smooth = np.convolve(working, np.ones(3) / 3.0, mode="same")
    return 40.0 + 60.0 * smooth + 5.0 * np.sin(2 * np.pi * t / 24.0) + _ar1(rng, n, 0.9, 2.0)


def _linear_drift(n: int, rng: np.random.Generator) -> np.ndarray:
    """A sensor whose reading drifts linearly, with a small oscillation and noise."""
    t = np.arange(n)
    return 100.0 + 0.01 * t + 1.0 * np.sin(2 * np.pi * t / 60.0) + rng.normal(0, 0.2, n)


def _setpoint_steps(n: int, rng: np.random.Generator) -> np.ndarray:
    """A set-point or occupancy level: random steps between levels, first-order response, noise."""
    levels = np.empty(n)
    level = 20.0
    for i in range(n):
        if rng.random() < 0.01:
            level = float(rng.uniform(15.0, 30.0))
        levels[i] = level
    response = np.empty(n)
    acc = levels[0]
    for i in range(n):
        acc += 0.2 * (levels[i] - acc)
        response[i] = acc
    return response + rng.normal(0, 0.1, n)


TRAINING_PROFILES: dict[str, tuple[Callable[[int, np.random.Generator], np.ndarray], float]] = {
    "sine_96": (_sine_96, 900.0),
    "ar_walk": (_ar_walk, 60.0),
    "outdoor_daily": (_outdoor_daily, 300.0),
    "office_weekly": (_office_weekly, 3600.0),
    "linear_drift": (_linear_drift, 60.0),
    "setpoint_steps": (_setpoint_steps, 60.0),
}


def training_profiles(*, n: int = 8000, seed: int = 0) -> dict[str, Series]:
    """One series per training-mix profile, ``n`` samples each, at the profile's own sample period."""
    out = {}
    for i, (name, (make, period)) in enumerate(TRAINING_PROFILES.items()):
        rng = np.random.default_rng([seed, i])
        values = make(n, rng)
        times = TRAINING_START + period * np.arange(n)
        out[name] = Series.from_arrays(values, times=times, source=f"synthetic:{name}")
    return out
