"""The ``keras`` backend: the bundle's weights back in a real Keras GRU layer.

Used by ``edge-gru evaluate --backend keras`` and the tests as the ground truth the other
backends must match: windows run through ``keras.Sequential([GRU, Dense(1)])`` exactly as
Keras ``predict`` would, and pool steps run a Keras ``GRU`` over one time step from the
carried state. It needs TensorFlow, so it lives in the training package and is never a
device backend.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edge_gru.backends.base import Backend
from edge_gru.bundle import Bundle
from edge_gru.model import Model
from edge_gru.train import tfruntime


class KerasBackend(Backend):
    name = "keras"

    def __init__(self, bundle: Bundle) -> None:
        super().__init__(bundle)
        keras = tfruntime.keras()

        self._keras = keras
        w = bundle.weights
        x = keras.Input((1, self.features), name="x_t")
        h0 = keras.Input((self.units,), name="h_prev")
        gru = keras.layers.GRU(self.units, reset_after=w.reset_after, return_state=True, name="gru")
        out, h = gru(x, initial_state=[h0])
        y = keras.layers.Dense(1, name="dense")(out)
        self._step = keras.Model([x, h0], [y, h], name="keras_step")
        self._step.get_layer("gru").set_weights([w.kernel, w.recurrent_kernel, w.bias])
        self._step.get_layer("dense").set_weights([w.dense_kernel, w.dense_bias])
        self._windows: dict[int, Any] = {}

    def step(self, x: np.ndarray, h: np.ndarray, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        if np.unique(rows).size != rows.size:
            return np.array([self.step(x[s : s + 1], h, rows[s : s + 1])[0] for s in range(rows.size)], np.float32)
        xs = np.asarray(x, dtype=np.float32).reshape(rows.size, 1, self.features)
        y, h_new = self._step([xs, h[rows]], training=False)
        h[rows] = np.asarray(h_new, dtype=np.float32)
        return np.asarray(y, dtype=np.float32).reshape(rows.size)

    def run_windows(self, windows: np.ndarray) -> np.ndarray:
        """Keras ``predict`` of ``Sequential([GRU, Dense(1)])`` on (N, W, I) normalized windows."""
        keras = self._keras
        w = windows.shape[1]
        network = self._windows.get(w)
        if network is None:
            weights = self.bundle.weights
            network = keras.Sequential(
                [
                    keras.Input((w, self.features)),
                    keras.layers.GRU(self.units, reset_after=weights.reset_after, name="gru"),
                    keras.layers.Dense(1, name="dense"),
                ]
            )
            network.get_layer("gru").set_weights([weights.kernel, weights.recurrent_kernel, weights.bias])
            network.get_layer("dense").set_weights([weights.dense_kernel, weights.dense_bias])
            self._windows[w] = network
        y = network.predict(np.asarray(windows, dtype=np.float32), verbose=0, batch_size=1024)
        return np.asarray(y, dtype=np.float32).reshape(-1)


def load_keras(path: Any) -> Model:
    """``edge_gru.load`` with the Keras backend."""
    from edge_gru.bundle import load_bundle

    bundle = load_bundle(path)
    return Model(bundle, KerasBackend(bundle))
