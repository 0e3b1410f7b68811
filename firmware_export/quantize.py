"""Weight-only int8 quantization for the C runtime: int8 weights, one float scale per output column.

Each column of a kernel feeds one gate pre-activation (or one dense output), so one scale
per column keeps a small gate's weights as precise as a large one's. Activations and the
hidden states stay float: on a Cortex-M4 with an FPU that costs nothing and avoids the
calibration that full-integer models need; the flash shrinks about 4x. Every layer of a
stack is quantized the same way; biases stay float32.

>>> import numpy as np
>>> q = quantize_columns(np.array([[1.0, -0.5], [-2.0, 0.25]], dtype=np.float32))
>>> q.q.tolist(), [round(float(s), 6) for s in q.scale]
([[64, -127], [-127, 64]], [0.015748, 0.003937])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge_gru.layers import GRULayer, NetworkWeights


@dataclass(frozen=True)
class QuantizedMatrix:
    """``q * scale`` approximates the float matrix; ``scale`` has one entry per column."""

    q: np.ndarray  # (rows, cols) int8, symmetric, in [-127, 127]
    scale: np.ndarray  # (cols,) float32

    def dequantized(self) -> np.ndarray:
        return (self.q.astype(np.float32) * self.scale[None, :]).astype(np.float32)


def quantize_columns(w: np.ndarray) -> QuantizedMatrix:
    """Symmetric per-column int8 quantization (an all-zero column gets scale 1)."""
    w = np.asarray(w, dtype=np.float64)
    amax = np.max(np.abs(w), axis=0)
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.rint(w / scale.astype(np.float64)), -127, 127).astype(np.int8)
    return QuantizedMatrix(q=q, scale=scale)


@dataclass(frozen=True)
class QuantizedLayer:
    kernel: QuantizedMatrix  # GRU (I, 3U), dense (I, K)
    recurrent_kernel: QuantizedMatrix | None  # GRU (U, 3U); None for a dense layer


def quantize_network(weights: NetworkWeights) -> tuple[QuantizedLayer, ...]:
    """Quantize every layer's weight matrices, in layer order."""
    out = []
    for n, layer in enumerate(weights.network.layers):
        arrays = weights.layer(n)
        recurrent = quantize_columns(arrays["recurrent_kernel"]) if isinstance(layer, GRULayer) else None
        out.append(QuantizedLayer(kernel=quantize_columns(arrays["kernel"]), recurrent_kernel=recurrent))
    return tuple(out)


def dequantized_weights(weights: NetworkWeights) -> NetworkWeights:
    """The float model the int8 C runtime computes (up to float rounding): for checks and error budgets."""
    layers = []
    for arrays, q in zip(weights.arrays, quantize_network(weights), strict=True):
        layer = dict(arrays)
        layer["kernel"] = q.kernel.dequantized()
        if q.recurrent_kernel is not None:
            layer["recurrent_kernel"] = q.recurrent_kernel.dequantized()
        layers.append(layer)
    return NetworkWeights(weights.network, tuple(layers))
