"""The single-step TFLite models of a bundle: ``step_f32.tflite`` and ``step_int8.tflite``.

Each model computes one GRU step plus the Dense(1) head with the state *outside* the
model: inputs ``x_t`` (B, I) and ``h_prev`` (B, U), outputs ``y`` (B, 1) and ``h_t``
(B, U), named in the ``serving_default`` signature so a runtime maps them by name. The
batch dimension is dynamic, so one model serves any number of streams per call.

Only the single step is converted. Converting a whole-sequence Keras GRU to int8 crashes
TensorFlow 2.21; a step with explicit state converts cleanly to float32 and full int8.
The int8 model is calibrated on (x_t, h_prev) pairs gathered from closed-loop runs of the
float model over training data, so the quantization ranges are those of real hidden
states, not of random ones.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from edge_gru import reference
from edge_gru.bundle import GRUWeights
from edge_gru.train import tfruntime

INPUT_X = "x_t"
INPUT_H = "h_prev"
OUTPUT_Y = "y"
OUTPUT_H = "h_t"


def _step_module(weights: GRUWeights) -> Any:
    """A tf.Module whose ``step`` is the Keras GRU cell maths on constant weights."""
    tf = tfruntime.tensorflow()

    u = weights.units
    kernel = tf.constant(weights.kernel)
    recurrent = tf.constant(weights.recurrent_kernel)
    b_in = tf.constant(weights.input_bias())
    b_rec = tf.constant(weights.recurrent_bias())
    dense = tf.constant(weights.dense_kernel)
    dense_b = tf.constant(weights.dense_bias)
    reset_after = weights.reset_after

    class Step(tf.Module):  # type: ignore[name-defined,misc]
        @tf.function(
            input_signature=[
                tf.TensorSpec([None, weights.input_features], tf.float32, name=INPUT_X),
                tf.TensorSpec([None, u], tf.float32, name=INPUT_H),
            ]
        )
        def step(self, x_t: Any, h_prev: Any) -> dict[str, Any]:
            gx = tf.matmul(x_t, kernel) + b_in
            xz, xr, xh = gx[:, :u], gx[:, u : 2 * u], gx[:, 2 * u :]
            if reset_after:
                gh = tf.matmul(h_prev, recurrent) + b_rec
                hz, hr, hh = gh[:, :u], gh[:, u : 2 * u], gh[:, 2 * u :]
                z = tf.sigmoid(xz + hz)
                r = tf.sigmoid(xr + hr)
                cand = tf.tanh(xh + r * hh)
            else:
                gh = tf.matmul(h_prev, recurrent[:, : 2 * u])
                z = tf.sigmoid(xz + gh[:, :u])
                r = tf.sigmoid(xr + gh[:, u:])
                cand = tf.tanh(xh + tf.matmul(r * h_prev, recurrent[:, 2 * u :]))
            h_t = z * h_prev + (1.0 - z) * cand
            y = tf.matmul(h_t, dense) + dense_b
            return {OUTPUT_Y: tf.identity(y, name=OUTPUT_Y), OUTPUT_H: tf.identity(h_t, name=OUTPUT_H)}

    return Step()


def _converter(weights: GRUWeights) -> Any:
    tf = tfruntime.tensorflow()

    module = _step_module(weights)
    concrete = module.step.get_concrete_function()
    return tf.lite.TFLiteConverter.from_concrete_functions([concrete], module)


def convert_float(weights: GRUWeights) -> bytes:
    """The float32 single-step model."""
    return bytes(_converter(weights).convert())


def convert_int8(
    weights: GRUWeights, calibration: Sequence[tuple[np.ndarray, np.ndarray]], *, int8_io: bool = False
) -> bytes:
    """The full-integer single-step model (int8 weights and activations).

    ``calibration``: (x_t (1, I), h_prev (1, U)) float32 pairs from closed-loop runs.
    ``int8_io``: also make the model's inputs and outputs int8 (the caller quantizes the
    carried state every step); otherwise they stay float32 with int8 inside.
    """
    tf = tfruntime.tensorflow()

    converter = _converter(weights)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]

    def representative() -> Iterator[dict[str, np.ndarray]]:
        for x, h in calibration:
            yield {INPUT_X: np.asarray(x, np.float32), INPUT_H: np.asarray(h, np.float32)}

    converter.representative_dataset = representative
    if int8_io:
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    return bytes(converter.convert())


def calibration_states(
    weights: GRUWeights, sequences: Sequence[np.ndarray], *, samples: int = 1000, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(x_t, h_prev) pairs seen when the float model runs closed-loop over normalized ``sequences``.

    Each sequence (T, I) runs from a zero state as the pool runs a stream after a reset; the
    pairs are subsampled evenly at random, always keeping a few zero-state starts.
    """
    xs, hs = [], []
    for seq in sequences:
        seq = np.asarray(seq, dtype=np.float32)
        h = np.zeros((1, weights.units), dtype=np.float32)
        for t in range(seq.shape[0]):
            xs.append(seq[t : t + 1].copy())
            hs.append(h.copy())
            reference.gru_step(weights, seq[t : t + 1], h)
    if not xs:
        raise ValueError("no calibration data: every training sequence is empty")
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(xs), size=min(samples, len(xs)), replace=False)
    return [(xs[i], hs[i]) for i in np.sort(pick)]
