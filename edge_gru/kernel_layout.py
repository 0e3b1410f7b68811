"""Sizes and constants shared by the numba kernels, their ahead-of-time build and the backend.

Numba-free, so the backend can size its buffers for an ahead-of-time compiled kernel
without importing numba.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edge_gru.layers import Network

STATE_PER_UNIT = 7  # single-stream state vector: h (U) | gx (3U) | gh (3U)
TILE = 128  # streams per tile of the batched kernels (benchmarks/kernels.py --tiles compares sizes)
MIN_TILE_STREAMS = 4  # tiles with fewer streams run stream by stream: loops over 1-3 columns cost more


def packed_size(units: int, features: int) -> int:
    """Length of ``NetworkWeights.packed()`` of one GRU + Dense(1).

    kernel | recurrent | b_in | b_rec | dense | dense_bias.
    """
    g = 3 * units
    return features * g + units * g + 2 * g + units + 1


def tile_scratch_size(units: int, features: int, tile: int = TILE) -> int:
    """Float32 scratch for the batched kernels to work on tiles of ``tile`` streams as columns.

    x (I, T) | h (U, T) | new h (U, T) | r*h (U, T) | six gate accumulators (6, T). It is
    also at least the 7U a single stream needs.
    """
    return max((features + 3 * units + 6) * tile, STATE_PER_UNIT * units)


def _stack_dims(network: Network) -> tuple[int, int, int, int]:
    """(state size, widest GRU, widest dense, widest of inputs and layers), as the stack kernels compute them."""
    grus = [layer.units for layer in network.gru_layers]
    dense = [layer.units for layer in network.dense_layers]
    widest = max([network.input_features, *grus, *dense])
    return sum(grus), max(grus), max(dense), widest


def stack_state_size(network: Network) -> int:
    """The stack kernels' single-stream state vector: h (state size) | gx, gh (3 widest GRU) | two dense buffers."""
    hs, umax, dmax, _ = _stack_dims(network)
    return hs + 6 * umax + 2 * dmax


def stack_scratch_size(network: Network, tile: int = TILE) -> int:
    """Float32 scratch for the batched stack kernels: per column the states, two activation buffers,
    r*h of the widest GRU and six gate accumulators; at least what one stream needs.
    """
    hs, umax, _, wmax = _stack_dims(network)
    return max((hs + 2 * wmax + umax + 6) * tile, stack_state_size(network))
