"""From series to training data: chronological splits, normalization, windows and sequences.

Normalization is applied exactly as the pool applies it when serving: ``fixed`` uses the
mean/std of the training rows only; ``causal`` runs :func:`edge_gru.normalization.normalize_series`
over each series' valid readings in order (the pool skips missing readings and never resets a
stream's normalization at a gap), so the network trains on the numbers it will see.
The target of row ``t`` is ``(x[t+1] - offset[t]) / scale[t]``: whatever the network must
output at ``t`` for the pool to forecast ``x[t+1]`` exactly. With a ``Dense(k)`` head the
targets are the next k samples, each ``(x[t+j] - offset[t]) / scale[t]`` for j = 1..k: the
pool turns every output column into a forecast with the same offset and scale.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edge_gru.bundle import Normalization
from edge_gru.errors import DataError
from edge_gru.normalization import normalize_series
from edge_gru.series import Series


@dataclass(frozen=True)
class Split:
    """Row boundaries: train ``[0, train)``, validation ``[train, val)``, test ``[val, T)``."""

    train: int
    val: int
    total: int


@dataclass(frozen=True)
class Prepared:
    """A series normalized for the network, row-aligned with it."""

    series: Series
    split: Split
    z: np.ndarray  # (T, I) float32 network inputs; NaN where the row is missing
    offset: np.ndarray  # (T,) raw forecast = offset + scale * y
    scale: np.ndarray  # (T,)
    target: np.ndarray  # (T, horizon) float32 targets at row t; NaN where x[t+j] is not j samples ahead
    weight: float  # loss weight of this series

    def runs(self, start: int, stop: int, *, min_len: int = 1) -> list[tuple[int, int]]:
        """Segments clipped to ``[start, stop)``, long enough to use."""
        runs = []
        for a, b in self.series.segments:
            a, b = max(a, start), min(b, stop)
            if b - a >= min_len:
                runs.append((a, b))
        return runs


def chronological_split(series: Series, val_fraction: float, test_fraction: float, *, min_rows: int) -> Split:
    """Train on the past, validate on what follows, test on the most recent rows."""
    n = len(series)
    test = round(n * test_fraction)
    val = round(n * val_fraction)
    train = n - val - test
    if train < min_rows:
        raise DataError(
            f"{series.source}: column {series.target!r} has {n} rows; after holding out "
            f"{val_fraction:.0%} for validation and {test_fraction:.0%} for testing, {train} are left for "
            f"training, fewer than the {min_rows} needed"
        )
    return Split(train, train + val, n)


def fit_fixed(prepared_series: Sequence[tuple[Series, Split]], clip: float) -> Normalization:
    """Per-feature mean/std of the training rows of every series (never the validation or test rows)."""
    rows = [s.values[: sp.train][s.valid[: sp.train]] for s, sp in prepared_series]
    train = np.concatenate(rows) if rows else np.zeros((0, 1))
    if train.shape[0] < 2:
        raise DataError("too few valid training rows to fit the normalization")
    mean = train.mean(axis=0)
    std = train.std(axis=0)
    std = np.where(std > 1e-12, std, 1.0)
    return Normalization(
        kind="fixed",
        input_mean=tuple(float(v) for v in mean),
        input_std=tuple(float(v) for v in std),
        target_mean=float(mean[0]),
        target_std=float(std[0]),
        clip=clip,
    )


def prepare(series: Series, split: Split, normalization: Normalization, horizon: int = 1) -> Prepared:
    """Network inputs, output offsets/scales and the next ``horizon`` targets of each row, as the pool computes them."""
    n = len(series)
    valid = series.valid
    z = np.full((n, series.values.shape[1]), np.nan, dtype=np.float32)
    offset = np.full(n, np.nan)
    scale = np.full(n, np.nan)
    if normalization.kind == "causal":
        zv, ov, sv = normalize_series(normalization, series.values[valid], target=0)
        z[valid], offset[valid], scale[valid] = zv, ov, sv
    else:
        mean = np.asarray(normalization.input_mean)
        std = np.asarray(normalization.input_std)
        zz = (series.values - mean) / std
        if normalization.clip > 0:
            zz = np.clip(zz, -normalization.clip, normalization.clip)
        z[valid] = zz[valid]
        offset[valid] = normalization.target_mean
        scale[valid] = normalization.target_std
    target = np.full((n, horizon), np.nan, dtype=np.float32)
    x = series.target_values
    for a, b in series.segments:
        for j in range(1, horizon + 1):  # step j of row t is x[t + j], inside the same segment
            if b - a > j:
                target[a : b - j, j - 1] = (x[a + j : b] - offset[a : b - j]) / scale[a : b - j]
    if normalization.kind == "causal" and normalization.clip > 0:
        # While a stream's statistics are young a step can be hundreds of scales: such
        # targets would dominate the loss; the network learns "large move" from +-clip.
        np.clip(target, -normalization.clip, normalization.clip, out=target)
    return Prepared(series, split, z, offset, scale, target, 1.0)


def with_balanced_weights(items: Sequence[Prepared], *, settle: int = 0, absolute: bool = False) -> list[Prepared]:
    """Weight each series by 1 / (its persistence loss in network units) so smooth and jumpy series count alike.

    ``absolute``: the loss is MAE-like, so the persistence loss is the mean absolute target.
    """
    out = []
    for p in items:
        # skip the first rows, where causal statistics are still settling
        t = p.target[min(settle, p.split.train // 2) : p.split.train, 0]  # step 1: persistence's loss
        t = t[np.isfinite(t)]
        persistence = (float(np.mean(np.abs(t))) if absolute else float(np.mean(t * t))) if t.size else 1.0
        out.append(Prepared(p.series, p.split, p.z, p.offset, p.scale, p.target, 1.0 / max(persistence, 1e-8)))
    mean_w = float(np.mean([p.weight for p in out]))
    return [Prepared(p.series, p.split, p.z, p.offset, p.scale, p.target, p.weight / mean_w) for p in out]


def windows(items: Sequence[Prepared], part: str, window: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All (W, I) windows inside one segment whose next sample(s) lie in ``part`` ('train'/'val'/'test').

    Returns inputs (N, W, I), targets (N, horizon) and loss weights (N,).
    """
    xs, ys, ws = [], [], []
    horizon = items[0].target.shape[1] if items else 1
    for p in items:
        start, stop = _bounds(p.split, part)
        for a, b in p.runs(0, stop, min_len=window + 1):
            # window ends at row t (t >= a + W - 1); its targets x[t+1] .. x[t+k] must lie in [start, stop)
            first = max(a + window - 1, start - 1)
            last = b - 1 - horizon
            if last < first:
                continue
            ends = np.arange(first, last + 1)
            ends = ends[np.isfinite(p.target[ends]).all(axis=1)]
            if not ends.size:
                continue
            idx = ends[:, None] + np.arange(-window + 1, 1)[None, :]
            xs.append(p.z[idx])
            ys.append(p.target[ends])
            ws.append(np.full(ends.size, p.weight, dtype=np.float32))
    if not xs:
        return np.zeros((0, window, 1), np.float32), np.zeros((0, horizon), np.float32), np.zeros(0, np.float32)
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(ws)


def _bounds(split: Split, part: str) -> tuple[int, int]:
    return {"train": (0, split.train), "val": (split.train, split.val), "test": (split.val, split.total)}[part]


@dataclass(frozen=True)
class Track:
    """One run of consecutive samples for sequence training: inputs, targets, loss weights."""

    z: np.ndarray  # (n, I)
    y: np.ndarray  # (n, horizon)
    w: np.ndarray  # (n,) 0 where a target is missing or the step is not scored


def tracks(items: Sequence[Prepared], part: str, *, warmup: int, burn_in: int = 0) -> list[Track]:
    """Segments whose scored steps have their target in ``part``; each starts from a zero state.

    ``burn_in`` rows before the part (same segment) are prepended unscored so the state is
    warm, as it is when the pool has served the stream all along. The first ``warmup - 1``
    steps after a segment start are never scored: the pool does not forecast there. A step
    is scored when all its targets exist and the last one lies in ``part``.
    """
    out = []
    for p in items:
        start, stop = _bounds(p.split, part)
        for a, b in p.runs(0, stop, min_len=2):
            if b <= start:
                continue
            first = max(a, start - 1 - burn_in)
            z = p.z[first:b]
            y = p.target[first:b].copy()
            w = np.full(b - first, p.weight, dtype=np.float32)
            rows = np.arange(first, b)
            horizon = y.shape[1]
            scored = (
                np.isfinite(y).all(axis=1) & (rows + 1 >= start) & (rows + horizon < stop) & (rows - a >= warmup - 1)
            )
            w[~scored] = 0.0
            y[~np.isfinite(y)] = 0.0
            if scored.any():
                out.append(Track(z, y, w))
    return out
