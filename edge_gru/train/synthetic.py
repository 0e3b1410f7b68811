"""Seeded synthetic sensor profiles for training the generic default model and for tests.

Each profile mimics a family of real sensors, with measurement noise on top, because a
generic model must handle all of them: periodic (sine), slowly wandering (random walk),
daily and weekly cycles (buildings, energy), drift (ageing sensors) and level steps
(set-points, occupancy). Every profile is deterministic for a given seed.

>>> profiles = standard_profiles(n=500, seed=1)
>>> sorted(profiles)
['daily', 'drift', 'random_walk', 'sine', 'steps', 'weekly']
>>> bool(profiles["sine"].values.shape == (500, 1))
True
"""

from __future__ import annotations

import numpy as np

from edge_gru.series import Series

START = 1_700_000_000.0  # 2023-11-14, a fixed epoch so profiles are reproducible


def _ar1(rng: np.random.Generator, n: int, phi: float, sigma: float) -> np.ndarray:
    e = rng.normal(0.0, sigma, n)
    out = np.empty(n)
    acc = 0.0
    for i in range(n):
        acc = phi * acc + e[i]
        out[i] = acc
    return out


def sine(n: int, rng: np.random.Generator) -> np.ndarray:
    """A 96-sample sine (e.g. 15-min samples of a daily rhythm) plus white noise."""
    t = np.arange(n)
    return 20.0 + 5.0 * np.sin(2 * np.pi * t / 96.0 + rng.uniform(0, 2 * np.pi)) + rng.normal(0, 0.3, n)


def random_walk(n: int, rng: np.random.Generator) -> np.ndarray:
    """A slowly mean-reverting walk (a room or water temperature) seen through sensor noise."""
    return 50.0 + _ar1(rng, n, 0.995, 0.2) + rng.normal(0, 0.1, n)


def daily(n: int, rng: np.random.Generator) -> np.ndarray:
    """An outdoor temperature at 5-min samples: daily cycle, weather wander, noise."""
    t = np.arange(n)
    return (
        12.0
        + 6.0 * np.sin(2 * np.pi * t / 288.0 - 2.0)
        + 2.0 * np.sin(4 * np.pi * t / 288.0)
        + _ar1(rng, n, 0.99, 0.1)
        + rng.normal(0, 0.1, n)
    )


def weekly(n: int, rng: np.random.Generator) -> np.ndarray:
    """An office's hourly power: working-hours bump on weekdays, quiet weekends."""
    t = np.arange(n)
    hour = t % 24
    day = (t // 24) % 7
    working = ((hour >= 8) & (hour < 18) & (day < 5)).astype(float)
    smooth = np.convolve(working, np.ones(3) / 3.0, mode="same")
    return 40.0 + 60.0 * smooth + 5.0 * np.sin(2 * np.pi * t / 24.0) + _ar1(rng, n, 0.9, 2.0)


def drift(n: int, rng: np.random.Generator) -> np.ndarray:
    """A sensor whose reading drifts linearly, with a small oscillation and noise."""
    t = np.arange(n)
    return 100.0 + 0.01 * t + 1.0 * np.sin(2 * np.pi * t / 60.0) + rng.normal(0, 0.2, n)


def steps(n: int, rng: np.random.Generator) -> np.ndarray:
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


PROFILES = {
    "sine": (sine, 900.0),
    "random_walk": (random_walk, 60.0),
    "daily": (daily, 300.0),
    "weekly": (weekly, 3600.0),
    "drift": (drift, 60.0),
    "steps": (steps, 60.0),
}


def standard_profiles(*, n: int = 8000, seed: int = 0) -> dict[str, Series]:
    """One series per profile, ``n`` samples each, at the profile's own sample period."""
    out = {}
    for i, (name, (make, period)) in enumerate(PROFILES.items()):
        rng = np.random.default_rng([seed, i])
        values = make(n, rng)
        times = START + period * np.arange(n)
        out[name] = Series.from_arrays(values, times=times, source=f"synthetic:{name}")
    return out
