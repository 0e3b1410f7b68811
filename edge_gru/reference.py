"""The network step in plain numpy: the readable reference for tests and the ``numpy`` backend.

Exactly Keras 3: each ``GRU`` cell (``reset_after`` either way, gate columns z | r | h,
exact logistic sigmoid) feeds the next, the last one's state feeds the dense layers.
Batched over streams as rows; the per-stream state is the GRU layers' states side by side.

>>> import numpy as np
>>> from edge_gru.layers import DenseLayer, GRULayer, Network, NetworkWeights
>>> net = Network(1, (GRULayer(2), DenseLayer(1)))
>>> w = NetworkWeights(net, ({"kernel": np.zeros((1, 6), np.float32), "recurrent_kernel": np.zeros((2, 6), np.float32),
...                           "bias": np.zeros((2, 6), np.float32)},
...                          {"kernel": np.ones((2, 1), np.float32), "bias": np.zeros(1, np.float32)}))
>>> h = np.ones((1, 2), np.float32)
>>> y = gru_step(w, np.zeros((1, 1), np.float32), h)   # z = 0.5, candidate = 0: h halves
>>> h.tolist(), y.tolist()
([[0.5, 0.5]], [[1.0]])
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from edge_gru.layers import GRULayer, NetworkWeights

_ACT: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "linear": lambda v: v,
    "relu": lambda v: np.maximum(v, np.float32(0.0)),
    "tanh": np.tanh,
}


def sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):  # exp(-x) = inf for x << 0 gives the exact limit 0
        return np.asarray(1.0 / (1.0 + np.exp(-x)), dtype=x.dtype)


def activation(name: str, v: np.ndarray) -> np.ndarray:
    return sigmoid(v) if name == "sigmoid" else np.asarray(_ACT[name](v), dtype=np.float32)


def gru_cell(weights: NetworkWeights, index: int, x: np.ndarray, h: np.ndarray) -> None:
    """Layer ``index`` (a GRU) one step: ``x`` (S, I), ``h`` (S, U) updated in place."""
    arrays = weights.layer(index)
    kernel, rec = arrays["kernel"], arrays["recurrent_kernel"]
    u = rec.shape[0]
    gx = x.astype(np.float32) @ kernel + weights.input_bias(index)
    if arrays["bias"].ndim == 2:
        gh = h @ rec + weights.recurrent_bias(index)
        z = sigmoid(gx[:, :u] + gh[:, :u])
        r = sigmoid(gx[:, u : 2 * u] + gh[:, u : 2 * u])
        cand = np.tanh(gx[:, 2 * u :] + r * gh[:, 2 * u :])
    else:
        gh = h @ rec[:, : 2 * u]
        z = sigmoid(gx[:, :u] + gh[:, :u])
        r = sigmoid(gx[:, u : 2 * u] + gh[:, u:])
        cand = np.tanh(gx[:, 2 * u :] + (r * h) @ rec[:, 2 * u :])
    h[...] = z * h + (1.0 - z) * cand


def gru_step(weights: NetworkWeights, x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """One step for S streams: ``x`` (S, I), ``h`` (S, state_size) updated in place; returns y (S, horizon)."""
    net = weights.network
    v = np.asarray(x, dtype=np.float32)
    offset = 0
    for n, layer in enumerate(net.layers):
        if isinstance(layer, GRULayer):
            hl = h[:, offset : offset + layer.units]
            cell = np.ascontiguousarray(hl)
            gru_cell(weights, n, v, cell)
            hl[...] = cell
            v = cell
            offset += layer.units
        else:
            arrays = weights.layer(n)
            v = activation(layer.activation, (v @ arrays["kernel"] + arrays["bias"]).astype(np.float32))
    return np.asarray(v, dtype=np.float32)


def run_windows(weights: NetworkWeights, windows: np.ndarray) -> np.ndarray:
    """Run (N, W, I) normalized windows from a zero state; returns the last step's y (N, horizon)."""
    n, w, _ = windows.shape
    h = np.zeros((n, weights.network.state_size), dtype=np.float32)
    y = np.zeros((n, weights.network.horizon), dtype=np.float32)
    for t in range(w):
        y = gru_step(weights, windows[:, t, :], h)
    return y
