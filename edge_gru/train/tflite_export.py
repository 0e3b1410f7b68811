"""The single-step TFLite models of a bundle: ``step_f32.tflite`` and ``step_int8.tflite``.

Each model computes one step of the whole layer list (every GRU layer, then the dense
layers) with the state *outside* the model: inputs ``x_t`` (B, I) and ``h_prev``
(B, state_size), outputs ``y`` (B, horizon) and ``h_t`` (B, state_size), named in the
``serving_default`` signature so a runtime maps them by name. The state row is the GRU
layers' states side by side in layer order, as every backend carries it. The batch
dimension is dynamic, so one model serves any number of streams per call.

Only the single step is converted. Converting a whole-sequence Keras GRU to int8 crashes
TensorFlow 2.21; a step with explicit state converts cleanly to float32 and full int8.
The int8 model is calibrated on (x_t, h_prev) pairs gathered from closed-loop runs of the
float model over training data, so the quantization ranges are those of real hidden
states, not of random ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from edge_gru import reference
from edge_gru.layers import GRULayer, NetworkWeights
from edge_gru.train import tfruntime

INPUT_X = "x_t"
INPUT_H = "h_prev"
OUTPUT_Y = "y"
OUTPUT_H = "h_t"


def _gru_cell(tf: Any, weights: NetworkWeights, index: int) -> Callable[[Any, Any], Any]:
    """Layer ``index``'s Keras GRU cell maths on constant weights: (x, h) -> h_new."""
    layer = weights.network.layers[index]
    u = layer.units
    arrays = weights.layer(index)
    kernel = tf.constant(arrays["kernel"])
    recurrent = tf.constant(arrays["recurrent_kernel"])
    b_in = tf.constant(weights.input_bias(index))
    b_rec = tf.constant(weights.recurrent_bias(index))
    reset_after = isinstance(layer, GRULayer) and layer.reset_after

    def cell(x: Any, h: Any) -> Any:
        gx = tf.matmul(x, kernel) + b_in
        xz, xr, xh = gx[:, :u], gx[:, u : 2 * u], gx[:, 2 * u :]
        if reset_after:
            gh = tf.matmul(h, recurrent) + b_rec
            z = tf.sigmoid(xz + gh[:, :u])
            r = tf.sigmoid(xr + gh[:, u : 2 * u])
            cand = tf.tanh(xh + r * gh[:, 2 * u :])
        else:
            gh = tf.matmul(h, recurrent[:, : 2 * u])
            z = tf.sigmoid(xz + gh[:, :u])
            r = tf.sigmoid(xr + gh[:, u:])
            cand = tf.tanh(xh + tf.matmul(r * h, recurrent[:, 2 * u :]))
        return z * h + (1.0 - z) * cand

    return cell


def _dense(tf: Any, weights: NetworkWeights, index: int, activation: str) -> Callable[[Any], Any]:
    arrays = weights.layer(index)
    kernel = tf.constant(arrays["kernel"])
    bias = tf.constant(arrays["bias"])
    act: Callable[[Any], Any] = {
        "linear": lambda v: v,
        "relu": tf.nn.relu,
        "tanh": tf.tanh,
        "sigmoid": tf.sigmoid,
    }[activation]
    return lambda v: act(tf.matmul(v, kernel) + bias)


def _step_module(weights: NetworkWeights) -> Any:
    """A tf.Module whose ``step`` runs every layer once on constant weights."""
    tf = tfruntime.tensorflow()
    net = weights.network
    grus: list[tuple[int, int, Callable[[Any, Any], Any]]] = []  # (state offset, units, cell)
    denses: list[Callable[[Any], Any]] = []
    offset = 0
    for n, layer in enumerate(net.layers):
        if isinstance(layer, GRULayer):
            grus.append((offset, layer.units, _gru_cell(tf, weights, n)))
            offset += layer.units
        else:
            denses.append(_dense(tf, weights, n, layer.activation))
    single = len(grus) == 1

    class Step(tf.Module):  # type: ignore[name-defined,misc]
        @tf.function(
            input_signature=[
                tf.TensorSpec([None, net.input_features], tf.float32, name=INPUT_X),
                tf.TensorSpec([None, net.state_size], tf.float32, name=INPUT_H),
            ]
        )
        def step(self, x_t: Any, h_prev: Any) -> dict[str, Any]:
            v = x_t
            states = []
            for start, units, cell in grus:
                # one GRU layer: its own slice of the state row (no slice when it is the whole row)
                v = cell(v, h_prev if single else h_prev[:, start : start + units])
                states.append(v)
            h_t = states[0] if single else tf.concat(states, axis=1)
            for dense in denses:
                v = dense(v)
            return {OUTPUT_Y: tf.identity(v, name=OUTPUT_Y), OUTPUT_H: tf.identity(h_t, name=OUTPUT_H)}

    return Step()


def _converter(weights: NetworkWeights) -> Any:
    tf = tfruntime.tensorflow()

    module = _step_module(weights)
    concrete = module.step.get_concrete_function()
    return tf.lite.TFLiteConverter.from_concrete_functions([concrete], module)


def convert_float(weights: NetworkWeights) -> bytes:
    """The float32 single-step model."""
    return bytes(_converter(weights).convert())


def convert_int8(
    weights: NetworkWeights, calibration: Sequence[tuple[np.ndarray, np.ndarray]], *, int8_io: bool = False
) -> bytes:
    """The full-integer single-step model (int8 weights and activations).

    ``calibration``: (x_t (1, I), h_prev (1, state_size)) float32 pairs from closed-loop runs.
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
    weights: NetworkWeights, sequences: Sequence[np.ndarray], *, samples: int = 1000, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(x_t, h_prev) pairs seen when the float model runs closed-loop over normalized ``sequences``.

    Each sequence (T, I) runs from a zero state as the pool runs a stream after a reset; the
    pairs are subsampled evenly at random, always keeping a few zero-state starts.
    """
    xs, hs = [], []
    for seq in sequences:
        seq = np.asarray(seq, dtype=np.float32)
        if seq.ndim != 2 or seq.shape[1] != weights.network.input_features:
            raise ValueError(
                f"calibration sequence of shape {seq.shape}, expected (T, {weights.network.input_features})"
            )
        h = np.zeros((1, weights.network.state_size), dtype=np.float32)
        for t in range(seq.shape[0]):
            xs.append(seq[t : t + 1].copy())
            hs.append(h.copy())
            reference.gru_step(weights, seq[t : t + 1], h)
    if not xs:
        raise ValueError("no calibration data: every training sequence is empty")
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(xs), size=min(samples, len(xs)), replace=False)
    return [(xs[i], hs[i]) for i in np.sort(pick)]
