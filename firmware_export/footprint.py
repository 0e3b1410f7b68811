"""Flash and RAM that an exported model needs, computed from the C layout the runtime uses.

Flash counts the ``const`` data of ``edge_gru_model.c`` (weight matrices, int8 scales,
biases, the layer table, normalization constants), not the runtime's code, which depends
on the compiler (a Cortex-M4 build of the runtime is about 2 KiB of ``.text``; see
docs/firmware.md). RAM is one ``edge_gru_state`` per stream plus the stack of one forecast
(its arrays and call frames).

>>> from edge_gru.bundle import Manifest, Normalization
>>> from edge_gru.layers import DenseLayer, GRULayer, Network
>>> m = Manifest(network=Network(1, (GRULayer(50), DenseLayer(1))), window=1, mode="stateful",
...              features=("value",), target="value", normalization=Normalization(kind="causal", halflife=96.0))
>>> f = footprint(m, int8=False)
>>> f.weight_bytes, f.constant_bytes, f.state_bytes, f.scratch_bytes, f.parameters
(30800, 1252, 296, 1476, 8001)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from edge_gru.bundle import Manifest
from firmware_export.layout import TABLE_ROW_BYTES, layout

PERIOD_SAMPLES = 5  # EDGE_GRU_PERIOD_SAMPLES in edge_gru_runtime.h
CALL_FRAMES = 256  # saved registers and spills of the five nested calls of one forecast (gcc -O2, x86-64)
F32, F64, U32 = 4, 8, 4


@dataclass(frozen=True)
class Footprint:
    weight_bytes: int  # weight matrices (float32 or int8) and their int8 scales
    constant_bytes: int  # biases, the layer table and normalization constants
    state_bytes: int  # sizeof(edge_gru_state): one per stream
    scratch_bytes: int  # stack arrays and call frames of one forecast
    parameters: int
    macs_per_sample: int  # multiply-adds per accepted sample (window mode: the whole window)

    @property
    def flash_bytes(self) -> int:
        return self.weight_bytes + self.constant_bytes

    @property
    def ram_bytes(self) -> int:
        return self.state_bytes + self.scratch_bytes


def footprint(manifest: Manifest, *, int8: bool) -> Footprint:
    """Byte counts for ``manifest``'s model as the runtime lays it out (double normalization statistics)."""
    net = manifest.network
    plan = layout(net, int8=int8)
    i, s, k = net.input_features, net.state_size, net.horizon
    window_mode = manifest.mode == "window"
    causal = manifest.normalization.kind == "causal"
    weight_bytes = plan.matrix_count * (1 if int8 else F32) + plan.scale_count * F32
    norm = 2 * i * F64 if not causal else 0
    constant_bytes = plan.bias_count * F32 + len(plan.rows) * TABLE_ROW_BYTES + norm

    state = 2 * i * F64 if causal else 0
    state += (2 + PERIOD_SAMPLES) * F64  # last_ts, period, intervals
    state += (manifest.window * i if window_mode else s) * F32  # ring or the GRU states
    state += F32 if causal else 0  # newest target reading
    state += 5 * U32  # head, count, norm_count, n_intervals, gap_resets
    state = -(-state // F64) * F64  # the struct is padded to the alignment of double

    # gx, gh (widest GRU's gates), two dense buffers, z, the network and raw outputs (+ the states for a window)
    scratch = (2 * plan.max_gates + 2 * plan.max_dense + i + 2 * k + (s if window_mode else 0)) * F32 + CALL_FRAMES
    parameters = sum(math.prod(shape) for shapes in net.shapes() for shape in shapes.values())
    macs = plan.matrix_count * (manifest.window if window_mode else 1)  # one multiply-add per weight and step
    return Footprint(weight_bytes, constant_bytes, state, scratch, parameters, macs)
