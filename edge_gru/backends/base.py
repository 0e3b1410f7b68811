"""The backend interface."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from edge_gru.bundle import Bundle


class Backend(ABC):
    """Runs network steps on normalized float32 inputs against caller-owned per-stream states.

    A stream's state is an opaque float32 row of ``state_size`` (the GRU layers' states side
    by side); the pool stores and checkpoints rows without knowing their layout.
    """

    name: str = ""

    def __init__(self, bundle: Bundle) -> None:
        self.bundle = bundle
        self.network = bundle.manifest.network
        self.features = self.network.input_features
        self.state_size = self.network.state_size
        self.horizon = self.network.horizon

    @abstractmethod
    def step(self, x: np.ndarray, h: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Advance streams ``rows`` (S,) of ``h`` (N, state_size) by one step on inputs ``x`` (S, I).

        Updates ``h`` in place and returns the network outputs (S, horizon) float32. A row
        listed twice advances twice, in order.
        """

    def run_windows(self, windows: np.ndarray) -> np.ndarray:
        """Run normalized windows (N, W, I) from a zero state; returns the last output (N, horizon)."""
        n = windows.shape[0]
        h = np.zeros((n, self.state_size), dtype=np.float32)
        rows = np.arange(n, dtype=np.int64)
        y = np.zeros((n, self.horizon), dtype=np.float32)
        for t in range(windows.shape[1]):
            y = self.step(np.ascontiguousarray(windows[:, t, :]), h, rows)
        return y
