"""The numba kernels equal the numpy reference, allocate nothing per step, and fail clearly without a cache."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_gru import reference
from edge_gru.kernel_layout import (
    MIN_TILE_STREAMS,
    STATE_PER_UNIT,
    TILE,
    stack_scratch_size,
    stack_state_size,
    tile_scratch_size,
)
from edge_gru.layers import ACTIVATIONS, DenseLayer, GRULayer, Network, NetworkWeights
from edge_gru.layers import random_weights as random_network
from tests.bundles import random_weights
from tests.pyrun import run_python

kernels = pytest.importorskip("edge_gru.kernels")
ROOT = Path(__file__).resolve().parent.parent
TOL = 1e-5


def _sequential_reference(w: NetworkWeights, x: np.ndarray, h: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """One stream at a time with the numpy reference: the meaning of a batched step; (S, horizon)."""
    y = np.empty((rows.shape[0], w.network.horizon), np.float32)
    for s, row in enumerate(rows):
        hs = h[row : row + 1]
        y[s] = reference.gru_step(w, x[s : s + 1], hs)[0]
    return y


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    features=st.integers(1, 4),
    units=st.integers(1, 64),
    reset_after=st.booleans(),
    streams=st.integers(1, 2 * TILE + 7),
    seed=st.integers(0, 2**31 - 1),
    repeat=st.booleans(),
)
def test_batched_and_single_step_equal_the_reference(
    features: int, units: int, reset_after: bool, streams: int, seed: int, repeat: bool
) -> None:
    rng = np.random.default_rng(seed)
    w = random_weights(units, features, reset_after=reset_after, seed=seed)
    p = w.packed()
    n_rows = streams + 3
    h = rng.normal(0, 0.6, (n_rows, units)).astype(np.float32)
    rows = rng.permutation(n_rows)[:streams].astype(np.int64)
    if repeat and streams > 2:
        rows[streams // 2] = rows[0]  # a stream listed twice advances twice, in order
    x = rng.normal(0, 1.5, (streams, features)).astype(np.float32)

    h_ref = h.copy()
    y_ref = _sequential_reference(w, x, h_ref, rows)[:, 0]
    y = np.full(streams, np.nan, np.float32)
    kernels.gru_step_batch(p, x, h, rows, np.zeros(tile_scratch_size(units, features), np.float32), y, reset_after)
    np.testing.assert_allclose(y, y_ref, atol=TOL, rtol=0)
    np.testing.assert_allclose(h, h_ref, atol=TOL, rtol=0)  # rows not listed are untouched too

    state = np.zeros(STATE_PER_UNIT * units, np.float32)
    state[:units] = h[rows[0]]
    h1 = h[rows[0] : rows[0] + 1].copy()
    y1_ref = reference.gru_step(w, x[:1], h1)[0, 0]
    y1 = kernels.gru_step(p, x[0], state, reset_after)
    assert abs(y1 - y1_ref) <= TOL
    np.testing.assert_allclose(state[:units], h1[0], atol=TOL, rtol=0)


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("scratch_kind", ["tiles", "single-stream"])
def test_windows_equal_the_reference(reset_after: bool, scratch_kind: str) -> None:
    units, features = 11, 2
    w = random_weights(units, features, reset_after=reset_after, seed=3)
    windows = np.random.default_rng(4).normal(0, 1, (TILE + 9, 7, features)).astype(np.float32)
    size = tile_scratch_size(units, features) if scratch_kind == "tiles" else STATE_PER_UNIT * units
    y = np.zeros(windows.shape[0], np.float32)
    kernels.gru_windows(w.packed(), windows, np.zeros(size, np.float32), y, reset_after)
    np.testing.assert_allclose(y, reference.run_windows(w, windows)[:, 0], atol=TOL, rtol=0)


def test_a_minimal_scratch_still_steps_every_stream() -> None:
    """Callers that pass only 6U of scratch (no room for a tile) get the stream-by-stream path."""
    units, streams = 50, 3 * MIN_TILE_STREAMS + 1
    w = random_weights(units, 1, seed=5)
    rng = np.random.default_rng(6)
    h = rng.normal(0, 0.5, (streams, units)).astype(np.float32)
    x = rng.normal(0, 1, (streams, 1)).astype(np.float32)
    rows = np.arange(streams, dtype=np.int64)[::-1].copy()
    h_ref = h.copy()
    y_ref = _sequential_reference(w, x, h_ref, rows)[:, 0]
    y = np.zeros(streams, np.float32)
    kernels.gru_step_batch(w.packed(), x, h, rows, np.zeros(6 * units, np.float32), y, True)
    np.testing.assert_allclose(y, y_ref, atol=TOL, rtol=0)
    np.testing.assert_allclose(h, h_ref, atol=TOL, rtol=0)


def test_stateful_run_does_not_drift_from_the_reference() -> None:
    """10,000 steps on one carried state stay within 1e-4 of the reference (errors do not accumulate)."""
    units = 50
    w = random_weights(units, 1, seed=7)
    x = np.sin(np.arange(10_000) / 13.0).astype(np.float32)[:, None] * 2
    state = np.zeros(STATE_PER_UNIT * units, np.float32)
    h_ref = np.zeros((1, units), np.float32)
    worst = 0.0
    for t in range(x.shape[0]):
        y = kernels.gru_step(w.packed(), x[t], state, True)
        worst = max(worst, abs(y - reference.gru_step(w, x[t : t + 1], h_ref)[0, 0]))
    assert worst <= 1e-4


# -- stacks ------------------------------------------------------------------------------------


@st.composite
def networks(draw: st.DrawFn) -> Network:
    """Random layer lists the kernels must run: 1-3 GRU layers, 1-3 dense layers, any activation."""
    grus = [GRULayer(draw(st.integers(1, 24)), draw(st.booleans())) for _ in range(draw(st.integers(1, 3)))]
    dense = [
        DenseLayer(draw(st.integers(1, 12)), draw(st.sampled_from(ACTIVATIONS))) for _ in range(draw(st.integers(0, 2)))
    ]
    head = DenseLayer(draw(st.integers(1, 4)), draw(st.sampled_from(ACTIVATIONS)))
    return Network(draw(st.integers(1, 4)), (*grus, *dense, head))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(net=networks(), streams=st.integers(1, TILE + 9), seed=st.integers(0, 2**31 - 1), repeat=st.booleans())
def test_stack_kernels_equal_the_reference(net: Network, streams: int, seed: int, repeat: bool) -> None:
    """Batched (tiles and stream by stream), single-stream and window kernels of any stack equal numpy."""
    rng = np.random.default_rng(seed)
    w = random_network(net, seed=seed % 1000)
    p, meta = w.packed(), w.meta()
    n_rows = streams + 3
    h = rng.normal(0, 0.6, (n_rows, net.state_size)).astype(np.float32)
    rows = rng.permutation(n_rows)[:streams].astype(np.int64)
    if repeat and streams > 2:
        rows[streams // 2] = rows[0]
    x = rng.normal(0, 1.5, (streams, net.input_features)).astype(np.float32)
    h_ref = h.copy()
    y_ref = _sequential_reference(w, x, h_ref, rows)
    y = np.full((streams, net.horizon), np.nan, np.float32)
    kernels.stack_step_batch(p, meta, x, h, rows, np.zeros(stack_scratch_size(net), np.float32), y)
    np.testing.assert_allclose(y, y_ref, atol=TOL, rtol=0)
    np.testing.assert_allclose(h, h_ref, atol=TOL, rtol=0)

    state = np.zeros(stack_state_size(net), np.float32)
    state[: net.state_size] = h[rows[0]]
    h1 = h[rows[0] : rows[0] + 1].copy()
    y1 = np.zeros(net.horizon, np.float32)
    kernels.stack_step(p, meta, x[0], state, y1)
    np.testing.assert_allclose(y1, reference.gru_step(w, x[:1], h1)[0], atol=TOL, rtol=0)
    np.testing.assert_allclose(state[: net.state_size], h1[0], atol=TOL, rtol=0)

    windows = rng.normal(0, 1, (streams, 5, net.input_features)).astype(np.float32)
    yw = np.zeros((streams, net.horizon), np.float32)
    kernels.stack_windows(p, meta, windows, np.zeros(stack_scratch_size(net), np.float32), yw)
    np.testing.assert_allclose(yw, reference.run_windows(w, windows), atol=TOL, rtol=0)


def test_the_stack_kernel_of_one_gru_and_dense1_equals_the_single_layer_kernel() -> None:
    """Both kernel families agree on the format-1 network (the backend serves it with the faster one)."""
    net = Network(1, (GRULayer(50), DenseLayer(1)))
    w = random_network(net, seed=9)
    rng = np.random.default_rng(10)
    h1 = rng.normal(0, 0.5, (TILE + 5, 50)).astype(np.float32)
    h2 = h1.copy()
    rows = np.arange(TILE + 5, dtype=np.int64)
    for _ in range(20):
        x = rng.normal(0, 1, (TILE + 5, 1)).astype(np.float32)
        y1 = np.zeros(TILE + 5, np.float32)
        y2 = np.zeros((TILE + 5, 1), np.float32)
        kernels.gru_step_batch(w.packed(), x, h1, rows, np.zeros(tile_scratch_size(50, 1), np.float32), y1, True)
        kernels.stack_step_batch(w.packed(), w.meta(), x, h2, rows, np.zeros(stack_scratch_size(net), np.float32), y2)
        np.testing.assert_allclose(y2[:, 0], y1, atol=TOL, rtol=0)
    np.testing.assert_allclose(h2, h1, atol=TOL, rtol=0)


def test_a_deep_stack_does_not_drift_over_10000_steps() -> None:
    net = Network(2, (GRULayer(16), GRULayer(12, reset_after=False), GRULayer(8), DenseLayer(6, "tanh"), DenseLayer(3)))
    w = random_network(net, seed=11)
    t = np.arange(10_000)
    x = np.stack([np.sin(t / 13.0), np.cos(t / 31.0)], axis=1).astype(np.float32) * 2
    state = np.zeros(stack_state_size(net), np.float32)
    h_ref = np.zeros((1, net.state_size), np.float32)
    y = np.zeros(3, np.float32)
    worst = 0.0
    for k in range(x.shape[0]):
        kernels.stack_step(w.packed(), w.meta(), x[k], state, y)
        worst = max(worst, float(np.abs(y - reference.gru_step(w, x[k : k + 1], h_ref)[0]).max()))
    assert worst <= 1e-4


def test_steps_allocate_nothing() -> None:
    units, streams = 50, 300
    w = random_weights(units, 1, seed=8)
    p = w.packed()
    x1 = np.ones(1, np.float32)
    state = np.zeros(STATE_PER_UNIT * units, np.float32)
    x = np.ones((streams, 1), np.float32)
    h = np.zeros((streams, units), np.float32)
    rows = np.arange(streams, dtype=np.int64)
    scratch = np.zeros(tile_scratch_size(units, 1), np.float32)
    y = np.zeros(streams, np.float32)
    kernels.gru_step(p, x1, state, True)  # compiled (or loaded) before measuring
    kernels.gru_step_batch(p, x, h, rows, scratch, y, True)
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for _ in range(20_000):
            kernels.gru_step(p, x1, state, True)
        for _ in range(200):
            kernels.gru_step_batch(p, x, h, rows, scratch, y, True)
        after, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert after - before < 1024, f"{after - before} bytes retained over 20,200 steps"
    assert peak - before < 4096, f"peak grew by {peak - before} bytes"


def test_steps_allocate_nothing_through_numbas_runtime() -> None:
    """tracemalloc sees only Python's allocator; numba's own (NRT) counts its allocations when asked.

    Calling from Python, numba wraps each array argument in a MemInfo for the call (freed
    on return): 3 for gru_step, 6 for gru_step_batch. Anything the kernels allocated
    themselves would add to that.
    """
    result = run_python(
        """
        import numpy as np
        from numba.core.runtime import rtsys
        from edge_gru import kernels
        from edge_gru.kernel_layout import STATE_PER_UNIT, tile_scratch_size
        from tests.bundles import random_weights
        u, s = 50, 300
        p = random_weights(u, 1).packed()
        x1, state = np.ones(1, np.float32), np.zeros(STATE_PER_UNIT * u, np.float32)
        x, h = np.ones((s, 1), np.float32), np.zeros((s, u), np.float32)
        rows, y = np.arange(s, dtype=np.int64), np.zeros(s, np.float32)
        scratch = np.zeros(tile_scratch_size(u, 1), np.float32)
        kernels.gru_step(p, x1, state, True)
        kernels.gru_step_batch(p, x, h, rows, scratch, y, True)
        before = rtsys.get_allocation_stats().alloc
        for _ in range(1000):
            kernels.gru_step(p, x1, state, True)
            kernels.gru_step_batch(p, x, h, rows, scratch, y, True)
        print(rtsys.get_allocation_stats().alloc - before)
        """,
        {"NUMBA_NRT_STATS": "1"},
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) == 1000 * (3 + 6)


def test_stack_steps_allocate_nothing_through_numbas_runtime() -> None:
    """As above for the stack kernels: one MemInfo per array argument (5 and 7), nothing more."""
    result = run_python(
        """
        import numpy as np
        from numba.core.runtime import rtsys
        from edge_gru import kernels
        from edge_gru.kernel_layout import stack_scratch_size, stack_state_size
        from edge_gru.layers import DenseLayer, GRULayer, Network, random_weights
        net = Network(1, (GRULayer(32), GRULayer(16, False), DenseLayer(8, "relu"), DenseLayer(3)))
        w = random_weights(net)
        p, meta, s = w.packed(), w.meta(), 300
        x1, state, y1 = np.ones(1, np.float32), np.zeros(stack_state_size(net), np.float32), np.zeros(3, np.float32)
        x, h = np.ones((s, 1), np.float32), np.zeros((s, net.state_size), np.float32)
        rows, y = np.arange(s, dtype=np.int64), np.zeros((s, 3), np.float32)
        scratch = np.zeros(stack_scratch_size(net), np.float32)
        kernels.stack_step(p, meta, x1, state, y1)
        kernels.stack_step_batch(p, meta, x, h, rows, scratch, y)
        before = rtsys.get_allocation_stats().alloc
        for _ in range(1000):
            kernels.stack_step(p, meta, x1, state, y1)
            kernels.stack_step_batch(p, meta, x, h, rows, scratch, y)
        print(rtsys.get_allocation_stats().alloc - before)
        """,
        {"NUMBA_NRT_STATS": "1"},
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) == 1000 * (5 + 7)


def test_import_edge_gru_imports_neither_numba_nor_tensorflow() -> None:
    result = run_python(
        """
        import sys
        import edge_gru, edge_gru.aot, edge_gru.backends.numba_backend
        heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('numba', 'llvmlite', 'tensorflow', 'keras'))
        print(heavy)
        """,
        {},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_unwritable_cache_raises_kernel_cache_error_with_the_fix(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")  # even root cannot create a directory under a file
    result = run_python(
        """
        import edge_gru
        try:
            from edge_gru import kernels
        except edge_gru.KernelCacheError as exc:
            print("KernelCacheError:", exc)
        else:
            print("imported")
        """,
        {"NUMBA_CACHE_DIR": str(blocker / "cache"), "HOME": str(blocker), "EDGE_GRU_KERNELS": "jit"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("KernelCacheError:"), result.stdout
    assert "NUMBA_CACHE_DIR" in result.stdout and str(blocker / "cache") in result.stdout
