"""The backend interface."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from edge_gru.bundle import Bundle


class Backend(ABC):
    """Runs GRU steps on normalized float32 inputs against caller-owned hidden states."""

    name: str = ""

    def __init__(self, bundle: Bundle) -> None:
        self.bundle = bundle
        self.units = bundle.manifest.units
        self.features = bundle.manifest.input_features
        self.reset_after = bundle.manifest.reset_after

    @abstractmethod
    def step(self, x: np.ndarray, h: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Advance streams ``rows`` (S,) of ``h`` (N, U) by one step on inputs ``x`` (S, I).

        Updates ``h`` in place and returns the network outputs (S,) float32. A row listed
        twice advances twice, in order.
        """

    def run_windows(self, windows: np.ndarray) -> np.ndarray:
        """Run normalized windows (N, W, I) from a zero state; returns the last output (N,)."""
        n = windows.shape[0]
        h = np.zeros((n, self.units), dtype=np.float32)
        rows = np.arange(n, dtype=np.int64)
        y = np.zeros(n, dtype=np.float32)
        for t in range(windows.shape[1]):
            y = self.step(np.ascontiguousarray(windows[:, t, :]), h, rows)
        return y
