"""Flash and RAM that an exported model needs, computed from the C layout the runtime uses.

Flash counts the ``const`` data of ``edge_gru_model.c`` (weights, int8 scales, biases,
normalization constants), not the runtime's code, which depends on the compiler (a
Cortex-M4 build of the runtime is about 1-2 KiB of ``.text``; see docs/firmware.md). RAM
is one ``edge_gru_state`` per stream plus the stack arrays of one forecast.

>>> from edge_gru.bundle import Manifest, Normalization
>>> m = Manifest(units=50, input_features=1, window=1, reset_after=True, mode="stateful",
...              features=("value",), target="value", normalization=Normalization(kind="causal", halflife=96.0))
>>> f = footprint(m, int8=False)
>>> f.weight_bytes, f.constant_bytes, f.state_bytes, f.scratch_bytes
(30800, 1204, 296, 1204)
"""

from __future__ import annotations

from dataclasses import dataclass

from edge_gru.bundle import Manifest

PERIOD_SAMPLES = 5  # EDGE_GRU_PERIOD_SAMPLES in edge_gru_runtime.h
F32, F64, U32 = 4, 8, 4


@dataclass(frozen=True)
class Footprint:
    weight_bytes: int  # weight matrices (float32 or int8) and their int8 scales
    constant_bytes: int  # biases and normalization constants
    state_bytes: int  # sizeof(edge_gru_state): one per stream
    scratch_bytes: int  # stack arrays of one forecast
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
    i, u = manifest.input_features, manifest.units
    g = 3 * u
    window_mode = manifest.mode == "window"
    matrix = i * g + u * g + u
    weight_bytes = matrix * (1 if int8 else F32) + ((g + g + 1) * F32 if int8 else 0)
    biases = (2 * g if manifest.reset_after else g) + 1
    norm = 2 * i * F64 if manifest.normalization.kind == "fixed" else 0
    constant_bytes = biases * F32 + norm

    state = 2 * i * F64 if manifest.normalization.kind == "causal" else 0
    state += (2 + PERIOD_SAMPLES) * F64  # last_ts, period, intervals
    state += (manifest.window * i if window_mode else u) * F32  # ring or hidden state
    state += F32 if manifest.normalization.kind == "causal" else 0  # newest target reading
    state += 5 * U32  # head, count, norm_count, n_intervals, gap_resets
    state = -(-state // F64) * F64  # the struct is padded to the alignment of double

    scratch = 2 * g * F32 + i * F32 + (u * F32 if window_mode else 0)  # gx, gh, z (+ h for a window)
    parameters = matrix + biases
    step_macs = i * g + u * g + u
    macs = step_macs * (manifest.window if window_mode else 1)
    return Footprint(weight_bytes, constant_bytes, state, scratch, parameters, macs)
