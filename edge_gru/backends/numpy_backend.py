"""The ``numpy`` backend: the reference maths, batched; a fallback where numba is missing."""

from __future__ import annotations

import numpy as np

from edge_gru import reference
from edge_gru.backends.base import Backend


class NumpyBackend(Backend):
    name = "numpy"

    def step(self, x: np.ndarray, h: np.ndarray, rows: np.ndarray) -> np.ndarray:
        if len(np.unique(rows)) != len(rows):
            # A stream listed twice must advance twice in order; do it one occurrence at a time.
            parts = [self.step(x[s : s + 1], h, rows[s : s + 1]) for s in range(len(rows))]
            return np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, self.horizon), np.float32)
        hs = h[rows]
        y = reference.gru_step(self.bundle.weights, x, hs)
        h[rows] = hs
        return y
