"""The GRU step in plain numpy: the readable reference for tests and the ``numpy`` backend.

Exactly the Keras 3 ``GRU`` cell (``reset_after`` either way, gate columns z | r | h,
exact logistic sigmoid) followed by the ``Dense(1)`` head. Batched over streams as rows.

>>> import numpy as np
>>> from edge_gru.bundle import GRUWeights
>>> w = GRUWeights(np.zeros((1, 6), np.float32), np.zeros((2, 6), np.float32),
...                np.zeros((2, 6), np.float32), np.ones((2, 1), np.float32), np.zeros(1, np.float32))
>>> h = np.ones((1, 2), np.float32)
>>> y = gru_step(w, np.zeros((1, 1), np.float32), h)   # z = 0.5, candidate = 0: h halves
>>> h.tolist(), y.tolist()
([[0.5, 0.5]], [1.0])
"""

from __future__ import annotations

import numpy as np

from edge_gru.bundle import GRUWeights


def sigmoid(x: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-x)), dtype=x.dtype)


def gru_step(weights: GRUWeights, x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """One step for S streams: ``x`` (S, I), ``h`` (S, U) updated in place; returns y (S,) float32."""
    u = weights.units
    gx = x.astype(np.float32) @ weights.kernel + weights.input_bias()
    if weights.reset_after:
        gh = h @ weights.recurrent_kernel + weights.recurrent_bias()
        z = sigmoid(gx[:, :u] + gh[:, :u])
        r = sigmoid(gx[:, u : 2 * u] + gh[:, u : 2 * u])
        cand = np.tanh(gx[:, 2 * u :] + r * gh[:, 2 * u :])
    else:
        gh = h @ weights.recurrent_kernel[:, : 2 * u]
        z = sigmoid(gx[:, :u] + gh[:, :u])
        r = sigmoid(gx[:, u : 2 * u] + gh[:, u:])
        cand = np.tanh(gx[:, 2 * u :] + (r * h) @ weights.recurrent_kernel[:, 2 * u :])
    h[...] = z * h + (1.0 - z) * cand
    return np.asarray((h @ weights.dense_kernel)[:, 0] + weights.dense_bias[0], dtype=np.float32)


def run_windows(weights: GRUWeights, windows: np.ndarray) -> np.ndarray:
    """Run (N, W, I) normalized windows from a zero state; returns the last step's y (N,)."""
    n, w, _ = windows.shape
    h = np.zeros((n, weights.units), dtype=np.float32)
    y = np.zeros(n, dtype=np.float32)
    for t in range(w):
        y = gru_step(weights, windows[:, t, :], h)
    return y
