"""Numba-compiled GRU step kernels; the only module in edge-gru that imports numba.

Design choices that make a single step cost well under a microsecond:

* all weights live in one contiguous float32 block (``GRUWeights.packed()``), and a
  single-stream step takes one state vector that holds the hidden state followed by its
  scratch space, so a call passes four arguments;
* the input and recurrent products run over rows with a contiguous inner loop over the
  3U gate columns, which LLVM vectorizes;
* the gate loop calls no library ``exp``/``tanh``: a clamped rational tanh (max abs error
  below 1e-6) and ``sigmoid(x) = 0.5 + 0.5 * tanh(x / 2)`` keep it branch-free;
* ``error_model='numpy'`` drops the division-by-zero checks that block vectorization;
* nothing is allocated per step: the caller owns state, scratch and outputs.

Packed block layout for I inputs and U units (G = 3U)::

    kernel (I*G) | recurrent_kernel (U*G) | b_in (G) | b_rec (G) | dense (U) | dense_bias (1)

Single-stream state vector: ``h (U) | gx (G) | gh (G)`` — length ``7U``.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import numpy as np

from edge_gru.errors import KernelCacheError

try:
    import numba
except ImportError as exc:  # pragma: no cover - exercised only without numba installed
    from edge_gru.errors import BackendUnavailableError

    raise BackendUnavailableError(
        "the numba backend needs numba: pip install 'edge-gru[device]' (or use backend='numpy')"
    ) from exc

STATE_PER_UNIT = 7  # h | gx (3U) | gh (3U)


def _ensure_cache_dir() -> None:
    """Fail early, with the fix, when numba would have nowhere to write its cache."""
    configured = os.environ.get("NUMBA_CACHE_DIR")
    candidates = [configured] if configured else [os.path.join(os.path.dirname(__file__), "__pycache__")]
    if not configured:
        candidates.append(os.path.join(os.path.expanduser("~"), ".cache", "numba"))
    for directory in candidates:
        try:
            os.makedirs(directory, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=directory):
                return
        except OSError:
            continue
    raise KernelCacheError(
        f"numba cannot write its kernel cache (tried {', '.join(candidates)}); set NUMBA_CACHE_DIR "
        "to a writable directory (under systemd: CacheDirectory=edge-gru and "
        "Environment=NUMBA_CACHE_DIR=/var/cache/edge-gru)"
    )


_ensure_cache_dir()

_JIT: dict[str, Any] = {
    "cache": True,
    "nogil": True,
    "error_model": "numpy",
    "fastmath": {"nsz", "arcp", "contract", "afn"},
}

_F = np.float32
_CLAMP = _F(7.99881172180175781)
_A1, _A3, _A5, _A7 = _F(4.89352455891786e-03), _F(6.37261928875436e-04), _F(1.48572235717979e-05), _F(
    5.12229709037114e-08
)
_A9, _A11, _A13 = _F(-8.60467152213735e-11), _F(2.00018790482477e-13), _F(-2.76076847742355e-16)
_B0, _B2, _B4, _B6 = _F(4.89352518554385e-03), _F(2.26843463243900e-03), _F(1.18534705686654e-04), _F(
    1.19825839466702e-06
)
_HALF = _F(0.5)
_ONE = _F(1.0)
_ZERO = _F(0.0)


@numba.njit(inline="always", **_JIT)
def fast_tanh(x: float) -> float:
    x = min(max(x, -_CLAMP), _CLAMP)
    x2 = x * x
    p = x2 * _A13 + _A11
    p = x2 * p + _A9
    p = x2 * p + _A7
    p = x2 * p + _A5
    p = x2 * p + _A3
    p = x2 * p + _A1
    p = x * p
    q = x2 * _B6 + _B4
    q = x2 * q + _B2
    q = x2 * q + _B0
    return p / q


@numba.njit(inline="always", **_JIT)
def _cell(p, x, h, gx, gh, reset_after):  # type: ignore[no-untyped-def]
    """One GRU step + Dense(1) on one stream; ``h`` updated in place; returns y.

    Every inner loop indexes a slice from zero, so LLVM can prove the indices non-negative
    and vectorize (an offset index keeps numba's negative-index wrap check in the loop).
    """
    n_in = x.shape[0]
    u = h.shape[0]
    g = 3 * u
    rec = n_in * g
    b_in = rec + u * g
    b_rec = b_in + g
    dense = b_rec + g
    bi = p[b_in:b_rec]
    for j in range(g):
        gx[j] = bi[j]
    for i in range(n_in):
        xi = x[i]
        w = p[i * g : (i + 1) * g]
        for j in range(g):
            gx[j] += xi * w[j]
    if reset_after:
        br = p[b_rec:dense]
        for j in range(g):
            gh[j] = br[j]
        for k in range(u):
            hk = h[k]
            w = p[rec + k * g : rec + (k + 1) * g]
            for j in range(g):
                gh[j] += hk * w[j]
        gxz = gx[:u]
        gxr = gx[u : 2 * u]
        gxc = gx[2 * u :]
        ghz = gh[:u]
        ghr = gh[u : 2 * u]
        ghc = gh[2 * u :]
        for j in range(u):
            z = _HALF + _HALF * fast_tanh(_HALF * (gxz[j] + ghz[j]))
            r = _HALF + _HALF * fast_tanh(_HALF * (gxr[j] + ghr[j]))
            c = fast_tanh(gxc[j] + r * ghc[j])
            h[j] = z * h[j] + (_ONE - z) * c
    else:
        # z and r from h; then the candidate from (r * h) Uh. gh[:2U] holds z|r,
        # gx[:U] (consumed by then) holds r * h, gh[2U:] the candidate's pre-activation.
        zr = gh[: 2 * u]
        for j in range(2 * u):
            zr[j] = _ZERO
        for k in range(u):
            hk = h[k]
            w = p[rec + k * g : rec + k * g + 2 * u]
            for j in range(2 * u):
                zr[j] += hk * w[j]
        for j in range(2 * u):
            zr[j] = _HALF + _HALF * fast_tanh(_HALF * (gx[j] + zr[j]))
        rh = gx[:u]
        r = gh[u : 2 * u]
        for j in range(u):
            rh[j] = r[j] * h[j]
        cand = gh[2 * u :]
        gxc = gx[2 * u :]
        for j in range(u):
            cand[j] = gxc[j]
        for k in range(u):
            rk = rh[k]
            w = p[rec + k * g + 2 * u : rec + (k + 1) * g]
            for j in range(u):
                cand[j] += rk * w[j]
        for j in range(u):
            z = zr[j]
            c = fast_tanh(cand[j])
            h[j] = z * h[j] + (_ONE - z) * c
    dw = p[dense : dense + u]
    y = p[dense + u]
    for j in range(u):
        y += h[j] * dw[j]
    return y


@numba.njit(**_JIT)
def gru_step(p, x, state, reset_after):  # type: ignore[no-untyped-def]
    """One stream, one step. ``state`` is ``h | scratch`` of length 7U; returns y (float32)."""
    u = state.shape[0] // STATE_PER_UNIT
    g = 3 * u
    return _cell(p, x, state[:u], state[u : u + g], state[u + g : u + 2 * g], reset_after)


@numba.njit(**_JIT)
def gru_step_batch(p, x, h, rows, scratch, y, reset_after):  # type: ignore[no-untyped-def]
    """S streams, one step each: ``x`` (S, I); ``h`` (N, U) rows ``rows[s]`` updated in place.

    Rows are processed in order, so a stream listed twice advances twice. ``scratch`` has
    length 6U; ``y`` (S,) receives the outputs.
    """
    u = h.shape[1]
    g = 3 * u
    gx = scratch[:g]
    gh = scratch[g : 2 * g]
    for s in range(x.shape[0]):
        y[s] = _cell(p, x[s], h[rows[s]], gx, gh, reset_after)


@numba.njit(**_JIT)
def gru_windows(p, windows, scratch, y, reset_after):  # type: ignore[no-untyped-def]
    """Run each (W, I) window of ``windows`` (N, W, I) from a zero state; ``y`` (N,) gets the last output.

    ``scratch`` has length 7U.
    """
    u = scratch.shape[0] // STATE_PER_UNIT
    g = 3 * u
    h = scratch[:u]
    gx = scratch[u : u + g]
    gh = scratch[u + g : u + 2 * g]
    for n in range(windows.shape[0]):
        for j in range(u):
            h[j] = _ZERO
        out = _ZERO
        for t in range(windows.shape[1]):
            out = _cell(p, windows[n, t], h, gx, gh, reset_after)
        y[n] = out


def warm_up(units: int = 4, features: int = 1) -> None:
    """Compile (or load from cache) every kernel signature the backends use."""
    g = 3 * units
    p = np.zeros(features * g + units * g + 2 * g + units + 1, dtype=np.float32)
    for reset_after in (True, False):
        gru_step(p, np.zeros(features, np.float32), np.zeros(STATE_PER_UNIT * units, np.float32), reset_after)
        gru_step_batch(
            p,
            np.zeros((1, features), np.float32),
            np.zeros((1, units), np.float32),
            np.zeros(1, np.int64),
            np.zeros(6 * units, np.float32),
            np.zeros(1, np.float32),
            reset_after,
        )
        gru_windows(
            p,
            np.zeros((1, 1, features), np.float32),
            np.zeros(STATE_PER_UNIT * units, np.float32),
            np.zeros(1, np.float32),
            reset_after,
        )
