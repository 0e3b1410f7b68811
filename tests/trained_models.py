"""Tiny real models trained once per test session (a few seconds each) and shared by the tests.

A learnable series: a 24-sample cycle with a second harmonic, a slow wander and noise,
one reading a minute. Persistence is far from optimal on it, so a working trainer must
beat it clearly.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import numpy as np

from edge_gru.series import Series


def learnable_series(n: int = 1500, seed: int = 0) -> Series:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    wander = np.cumsum(rng.normal(0, 0.02, n))
    values = 10.0 + 3.0 * np.sin(2 * np.pi * t / 24) + np.sin(4 * np.pi * t / 24) + wander + rng.normal(0, 0.15, n)
    return Series.from_arrays(values, times=1_700_000_000.0 + 60.0 * t, source="learnable")


def write_csv(path: Path, series: Series, column: str = "value") -> Path:
    assert series.times is not None
    lines = [f",{column}"] + [f"{t:.0f},{v:.6f}" for t, v in zip(series.times, series.target_values, strict=True)]
    path.write_text("\n".join(lines) + "\n")
    return path


@functools.cache
def _root() -> Path:
    return Path(tempfile.mkdtemp(prefix="edge-gru-test-models-"))


@functools.cache
def trained(mode: str) -> Path:
    """Path of a bundle trained on :func:`learnable_series` in ``mode`` ('window' or 'stateful')."""
    from edge_gru.train.trainer import TrainConfig, train

    config = {
        "window": TrainConfig(
            layers=(12,),
            window=8,
            mode="window",
            epochs=25,
            batch_size=32,
            patience=5,
            learning_rate=3e-3,
            season=24,
            name="tiny-window",
        ),
        "stateful": TrainConfig(
            layers=(12,),
            mode="stateful",
            epochs=20,
            batch_size=16,
            bptt=32,
            patience=5,
            learning_rate=5e-3,
            season=24,
            name="tiny-stateful",
        ),
        "causal": TrainConfig(
            layers=(12,),
            mode="stateful",
            normalization="causal",
            halflife=48,
            epochs=20,
            batch_size=16,
            bptt=32,
            patience=5,
            learning_rate=5e-3,
            name="tiny-causal",
        ),
    }[mode]
    out = _root() / mode
    train(learnable_series(), out, config)
    return out
