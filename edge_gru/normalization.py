"""Per-stream input normalization, shared by training, serving, the simulator and the C export.

Two kinds (``manifest.normalization.kind``):

* ``fixed`` — mean/std per feature fitted on the training split; stateless.
* ``causal`` — every stream keeps exponentially weighted mean and variance of its own
  readings, updated with the current reading *before* it is normalized. Nothing but the
  stream's past and present enters, so a model trained this way serves any sensor in any
  unit, and training, serving and the C runtime compute the same numbers.

Causal update for a reading ``x`` (count ``n`` after the update, ``alpha`` from the
half-life in samples)::

    a     = max(alpha, 1 / n)          # plain running mean for the first samples
    d     = x - mean
    mean += a * d
    var   = (1 - a) * (var + a * d * d)
    scale = max(sqrt(var), 1e-6 + 1e-4 * |mean|)
    z     = clip((x - mean) / scale, -clip, clip)     # network input
    forecast = x_target + scale_target * y             # network output -> raw units

The network predicts the *change* from the current reading in units of the stream's
scale, so ``y = 0`` is persistence: a generic model starts from the strongest naive
forecast and only has to learn corrections, which is what lets it beat persistence on
smooth series. ``fixed`` keeps ``forecast = target_mean + target_std * y``.

>>> import numpy as np
>>> norm = StreamNormalizer(Normalization(kind="causal", halflife=10.0, clip=8.0), features=1, target=0)
>>> norm.grow(1)
>>> rows = np.array([0])
>>> [round(float(norm.transform(rows, np.array([[v]]))[0, 0]), 3) for v in (10.0, 12.0, 11.0)]
[0.0, 1.0, 0.0]
"""

from __future__ import annotations

import math

import numpy as np

from edge_gru.bundle import Normalization


def causal_alpha(halflife: float) -> float:
    """Per-sample weight of the newest reading for a half-life given in samples."""
    return 1.0 - math.exp(math.log(0.5) / halflife)


class StreamNormalizer:
    """Normalization state for many streams, indexed by row; rows are owned by the pool."""

    def __init__(self, normalization: Normalization, features: int, target: int) -> None:
        self.spec = normalization
        self.features = features
        self.target = target
        self.causal = normalization.kind == "causal"
        self.alpha = causal_alpha(normalization.halflife) if self.causal else 0.0
        self.clip = normalization.clip
        self.mean = np.zeros((0, features), dtype=np.float64)
        self.var = np.zeros((0, features), dtype=np.float64)
        self.count = np.zeros(0, dtype=np.int64)
        self.last = np.zeros(0, dtype=np.float64)  # newest raw reading of the target, per row
        if not self.causal:
            self._in_mean = np.asarray(normalization.input_mean, dtype=np.float64)
            self._in_std = np.asarray(normalization.input_std, dtype=np.float64)

    def grow(self, capacity: int) -> None:
        old = self.mean.shape[0]
        if capacity <= old:
            return
        for name in ("mean", "var"):
            arr = np.zeros((capacity, self.features), dtype=np.float64)
            arr[:old] = getattr(self, name)
            setattr(self, name, arr)
        count = np.zeros(capacity, dtype=np.int64)
        count[:old] = self.count
        self.count = count
        last = np.zeros(capacity, dtype=np.float64)
        last[:old] = self.last[:old]
        self.last = last

    def reset(self, rows: np.ndarray) -> None:
        self.mean[rows] = 0.0
        self.var[rows] = 0.0
        self.count[rows] = 0
        self.last[rows] = 0.0

    def transform(self, rows: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Observe raw readings ``x`` (S, I) of distinct ``rows`` and return network inputs (S, I) float32."""
        x = np.asarray(x, dtype=np.float64)
        if self.causal:
            n = self.count[rows] + 1
            self.count[rows] = n
            a = np.maximum(self.alpha, 1.0 / n)[:, None]
            mean = self.mean[rows]
            d = x - mean
            mean = mean + a * d
            var = (1.0 - a) * (self.var[rows] + a * d * d)
            self.mean[rows] = mean
            self.var[rows] = var
            self.last[rows] = x[:, self.target]
            z = (x - mean) / self._scale(mean, var)
        else:
            z = (x - self._in_mean) / self._in_std
        if self.clip > 0:
            np.clip(z, -self.clip, self.clip, out=z)
        return z.astype(np.float32)

    def denormalize(self, rows: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Network outputs (S,) -> forecasts in raw units of the target feature (float64)."""
        y = np.asarray(y, dtype=np.float64)
        if self.causal:
            t = self.target
            return self.last[rows] + self._scale(self.mean[rows, t], self.var[rows, t]) * y
        return self.spec.target_mean + self.spec.target_std * y

    @staticmethod
    def _scale(mean: np.ndarray, var: np.ndarray) -> np.ndarray:
        return np.maximum(np.sqrt(var), 1e-6 + 1e-4 * np.abs(mean))

    def state(self) -> dict[str, np.ndarray]:
        return {"norm_mean": self.mean, "norm_var": self.var, "norm_count": self.count, "norm_last": self.last}

    def restore(self, arrays: dict[str, np.ndarray]) -> None:
        self.mean = np.array(arrays["norm_mean"], dtype=np.float64)
        self.var = np.array(arrays["norm_var"], dtype=np.float64)
        self.count = np.array(arrays["norm_count"], dtype=np.int64)
        self.last = np.array(arrays.get("norm_last", self.mean[:, self.target]), dtype=np.float64)


def normalize_series(
    normalization: Normalization, values: np.ndarray, target: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run one stream's readings (T, I) through the normalizer, as serving would.

    Returns the network inputs (T, I) float32 and, for each step, the ``(offset, scale)``
    (T,) pair that turns a network output at that step into raw units of the target — what
    the trainer needs to build targets ``(x[t+1] - offset[t]) / scale[t]``.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1:
        values = values[:, None]
    norm = StreamNormalizer(normalization, values.shape[1], target)
    norm.grow(1)
    row = np.zeros(1, dtype=np.int64)
    z = np.empty(values.shape, dtype=np.float32)
    offset = np.empty(values.shape[0], dtype=np.float64)
    scale = np.empty(values.shape[0], dtype=np.float64)
    for t in range(values.shape[0]):
        z[t] = norm.transform(row, values[t : t + 1])[0]
        offset[t] = norm.denormalize(row, np.zeros(1))[0]
        scale[t] = norm.denormalize(row, np.ones(1))[0] - offset[t]
    return z, offset, scale
