"""Weight-only int8 quantization for the C runtime: int8 weights, one float scale per gate column.

Each column of a kernel feeds one gate pre-activation (one output row of the transposed
matrix), so one scale per column keeps a small gate's weights as precise as a large one's.
Activations and the hidden state stay float: on a Cortex-M4 with an FPU that costs nothing
and avoids the calibration that full-integer models need; the flash shrinks about 4x.

>>> import numpy as np
>>> q = quantize_columns(np.array([[1.0, -0.5], [-2.0, 0.25]], dtype=np.float32))
>>> q.q.tolist(), [round(float(s), 6) for s in q.scale]
([[64, -127], [-127, 64]], [0.015748, 0.003937])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge_gru.bundle import GRUWeights


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
class QuantizedGRU:
    kernel: QuantizedMatrix  # (I, 3U)
    recurrent_kernel: QuantizedMatrix  # (U, 3U)
    dense_kernel: QuantizedMatrix  # (U, 1)


def quantize_gru(weights: GRUWeights) -> QuantizedGRU:
    """Quantize the three weight matrices; biases stay float32."""
    return QuantizedGRU(
        kernel=quantize_columns(weights.kernel),
        recurrent_kernel=quantize_columns(weights.recurrent_kernel),
        dense_kernel=quantize_columns(weights.dense_kernel),
    )


def dequantized_weights(weights: GRUWeights) -> GRUWeights:
    """The float model the int8 C runtime computes (up to float rounding): for checks and error budgets."""
    q = quantize_gru(weights)
    return GRUWeights(
        kernel=q.kernel.dequantized(),
        recurrent_kernel=q.recurrent_kernel.dequantized(),
        bias=weights.bias,
        dense_kernel=q.dense_kernel.dequantized(),
        dense_bias=weights.dense_bias,
    )
