"""The ``numba`` backend: compiled, allocation-free steps over the packed weight block."""

from __future__ import annotations

import numpy as np

from edge_gru.backends.base import Backend
from edge_gru.bundle import Bundle


class NumbaBackend(Backend):
    name = "numba"

    def __init__(self, bundle: Bundle) -> None:
        super().__init__(bundle)
        from edge_gru import kernels

        self._kernels = kernels
        self.packed = bundle.weights.packed()
        self._scratch = np.zeros(kernels.STATE_PER_UNIT * self.units, dtype=np.float32)
        self._y = np.zeros(0, dtype=np.float32)

    def step(self, x: np.ndarray, h: np.ndarray, rows: np.ndarray) -> np.ndarray:
        s = x.shape[0]
        if self._y.shape[0] < s:
            self._y = np.zeros(max(s, 2 * self._y.shape[0]), dtype=np.float32)
        y = self._y[:s]
        self._kernels.gru_step_batch(
            self.packed,
            np.ascontiguousarray(x, dtype=np.float32),
            h,
            np.ascontiguousarray(rows, dtype=np.int64),
            self._scratch,
            y,
            self.reset_after,
        )
        return y.copy()

    def run_windows(self, windows: np.ndarray) -> np.ndarray:
        y = np.zeros(windows.shape[0], dtype=np.float32)
        self._kernels.gru_windows(
            self.packed, np.ascontiguousarray(windows, dtype=np.float32), self._scratch, y, self.reset_after
        )
        return y

    def single_stream(self) -> tuple[object, np.ndarray, bool]:
        """The raw single-step kernel, its packed weights and flag, for benchmarks and tight loops."""
        return self._kernels.gru_step, self.packed, self.reset_after
