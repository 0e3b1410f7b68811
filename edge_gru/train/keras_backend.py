"""The ``keras`` backend: the bundle's layer list rebuilt in real Keras layers.

Used by ``edge-gru evaluate --backend keras`` and the tests as the ground truth the other
backends must match: windows run through :func:`~edge_gru.train.networks.window_model`
exactly as Keras ``predict`` would, and pool steps run
:func:`~edge_gru.train.networks.step_model` (every GRU over one time step from its slice of
the carried state). It needs TensorFlow, so it lives in the training package and is never a
device backend.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edge_gru.backends.base import Backend
from edge_gru.bundle import Bundle
from edge_gru.model import Model
from edge_gru.train import networks


class KerasBackend(Backend):
    name = "keras"

    def __init__(self, bundle: Bundle) -> None:
        super().__init__(bundle)
        self._step = networks.step_model_of(bundle.weights)
        self._windows: dict[int, Any] = {}

    def step(self, x: np.ndarray, h: np.ndarray, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        if np.unique(rows).size != rows.size:
            return np.concatenate([self.step(x[s : s + 1], h, rows[s : s + 1]) for s in range(rows.size)])
        xs = np.asarray(x, dtype=np.float32).reshape(rows.size, self.features)
        y, h_new = self._step([xs, h[rows]], training=False)
        h[rows] = np.asarray(h_new, dtype=np.float32)
        return np.asarray(y, dtype=np.float32).reshape(rows.size, self.horizon)

    def run_windows(self, windows: np.ndarray) -> np.ndarray:
        """Keras ``predict`` of the window model on (N, W, I) normalized windows; (N, horizon)."""
        w = windows.shape[1]
        model = self._windows.get(w)
        if model is None:
            model = self._windows[w] = networks.window_model_of(self.bundle.weights, w)
        y = model.predict(np.asarray(windows, dtype=np.float32), verbose=0, batch_size=1024)
        return np.asarray(y, dtype=np.float32).reshape(-1, self.horizon)


def load_keras(path: Any) -> Model:
    """``edge_gru.load`` with the Keras backend."""
    from edge_gru.bundle import load_bundle

    bundle = load_bundle(path)
    return Model(bundle, KerasBackend(bundle))
