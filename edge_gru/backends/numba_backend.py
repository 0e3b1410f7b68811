"""The ``numba`` backend: compiled, allocation-free steps over the packed weight block.

The kernels come from an ahead-of-time compiled module when one matches this machine
(:mod:`edge_gru.aot`; numba is then never imported), else from the numba JIT
(:mod:`edge_gru.kernels`). ``EDGE_GRU_KERNELS=aot|jit`` forces one of them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

from edge_gru import aot
from edge_gru.backends.base import Backend
from edge_gru.bundle import Bundle
from edge_gru.errors import BackendUnavailableError
from edge_gru.kernel_layout import STATE_PER_UNIT, stack_scratch_size, stack_state_size, tile_scratch_size

log = logging.getLogger(__name__)


def resolve_kernels(choice: str = "auto") -> tuple[Any, str]:
    """The kernel functions (a module-like object) and their kind: ``aot-host``, ``aot-generic`` or ``jit``."""
    if choice not in ("auto", "aot", "jit"):
        raise BackendUnavailableError(f"unknown kernel choice {choice!r}; expected auto, aot or jit")
    if choice in ("auto", "aot"):
        compiled = aot.load_kernels()
        if compiled is not None:
            return compiled, compiled.kind
        stale = [(path, why) for path, _, why in aot.find_compiled() if why is not None]
        if stale and choice == "auto":
            log.warning(
                "compiled kernels %s do not match (%s); using the numba JIT. Run `edge-gru build-kernels` again",
                stale[0][0],
                stale[0][1],
            )
        if choice == "aot":
            dirs = ", ".join(str(d) for d in aot.kernel_dirs())
            raise BackendUnavailableError(
                f"no ahead-of-time compiled kernels match this machine in {dirs}; run "
                f"`edge-gru build-kernels` (or set {aot.KERNEL_DIR_ENV} to where they were built; "
                "`edge-gru build-kernels --check` says why a module does not match)"
            )
    from edge_gru import kernels

    return kernels, "jit"


class NumbaBackend(Backend):
    name = "numba"

    def __init__(self, bundle: Bundle, kernels: str | None = None) -> None:
        super().__init__(bundle)
        self._kernels, self.kernel_kind = resolve_kernels(kernels or aot.kernel_choice())
        where = getattr(self._kernels, "path", None)
        log.info("numba backend: %s kernels%s", self.kernel_kind, f" from {where}" if where else "")
        self.packed = bundle.weights.packed()
        # one GRU + Dense(1): the single-layer kernels (the fastest path); any other list: the stack kernels
        self.classic = self.network.is_classic
        self.meta = bundle.weights.meta()
        first = self.network.layers[0]
        self.reset_after = bool(getattr(first, "reset_after", True))
        if self.classic:
            self._scratch = np.zeros(tile_scratch_size(self.state_size, self.features), dtype=np.float32)
        else:
            self._scratch = np.zeros(stack_scratch_size(self.network), dtype=np.float32)
        self._y = np.zeros((0, self.horizon), dtype=np.float32)

    def step(self, x: np.ndarray, h: np.ndarray, rows: np.ndarray) -> np.ndarray:
        s = x.shape[0]
        if self._y.shape[0] < s:
            self._y = np.zeros((max(s, 2 * self._y.shape[0]), self.horizon), dtype=np.float32)
        y = self._y[:s]
        if not h.flags.c_contiguous or h.dtype != np.float32:
            raise ValueError("the numba backend needs h as a C-contiguous float32 (N, state_size) array")
        xs = np.ascontiguousarray(x, dtype=np.float32).reshape(s, self.features)
        rs = np.ascontiguousarray(rows, dtype=np.int64)
        if self.classic:
            self._kernels.gru_step_batch(self.packed, xs, h, rs, self._scratch, y.reshape(s), self.reset_after)
        else:
            self._kernels.stack_step_batch(self.packed, self.meta, xs, h, rs, self._scratch, y)
        return y.copy()

    def run_windows(self, windows: np.ndarray) -> np.ndarray:
        w = np.ascontiguousarray(windows, dtype=np.float32)
        y = np.zeros((windows.shape[0], self.horizon), dtype=np.float32)
        if self.classic:
            self._kernels.gru_windows(self.packed, w, self._scratch, y.reshape(-1), self.reset_after)
        else:
            self._kernels.stack_windows(self.packed, self.meta, w, self._scratch, y)
        return y

    def single_stream(self) -> tuple[Any, np.ndarray, np.ndarray, bool]:
        """The raw single-step kernel of a one-GRU + Dense(1) bundle, its packed weights, a fresh 7U state, the flag.

        For tight loops: ``kernel(packed, x, state, reset_after) -> y``.
        """
        if not self.classic:
            raise ValueError("single_stream() is the one-GRU + Dense(1) kernel; use single_call() for any network")
        state = np.zeros(STATE_PER_UNIT * self.state_size, dtype=np.float32)
        return self._kernels.gru_step, self.packed, state, self.reset_after

    def single_call(self, x: np.ndarray) -> Callable[[], Any]:
        """One stream's raw kernel step on input ``x`` (I,), bound to a fresh state: for benchmarks.

        Whichever kernel this network is served with (single-layer or stack).
        """
        xs = np.ascontiguousarray(x, dtype=np.float32)
        if self.classic:
            kernel, packed, state, reset_after = self.single_stream()
            return partial(kernel, packed, xs, state, reset_after)
        state = np.zeros(stack_state_size(self.network), dtype=np.float32)
        y = np.zeros(self.horizon, np.float32)
        return partial(self._kernels.stack_step, self.packed, self.meta, xs, state, y)

    def batch_call(self, x: np.ndarray, h: np.ndarray, rows: np.ndarray) -> Callable[[], Any]:
        """The raw batched kernel advancing ``h[rows]`` on ``x`` in place, with no Python around it: for benchmarks."""
        s = x.shape[0]
        args = (np.ascontiguousarray(x, dtype=np.float32), h, np.ascontiguousarray(rows, dtype=np.int64), self._scratch)
        if self.classic:
            return partial(self._kernels.gru_step_batch, self.packed, *args, np.zeros(s, np.float32), self.reset_after)
        return partial(
            self._kernels.stack_step_batch, self.packed, self.meta, *args, np.zeros((s, self.horizon), np.float32)
        )
