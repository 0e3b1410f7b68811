"""Numba-compiled GRU step kernels; the only module in edge-gru that imports numba.

Design choices that make a single step cost well under a microsecond:

* all weights live in one contiguous float32 block (``NetworkWeights.packed()`` of one GRU + Dense(1)), and a
  single-stream step takes one state vector that holds the hidden state followed by its
  scratch space, so a call passes four arguments;
* the recurrent product runs over four rows of the recurrent kernel at a time with a
  contiguous inner loop over the 3U gate columns: LLVM vectorizes it, and the gate
  accumulators are loaded and stored once per four rows instead of once per row (the
  four multiply-adds stay in the single-row order, so the sums round as before);
* the gate loop calls no library ``exp``/``tanh``: a clamped rational tanh (max abs error
  below 1e-6) and ``sigmoid(x) = 0.5 + 0.5 * tanh(x / 2)`` keep it branch-free;
* ``error_model='numpy'`` drops the division-by-zero checks that block vectorization;
* nothing is allocated per step: the caller owns state, scratch and outputs.

The batched step holds streams as columns: a tile of T streams is gathered into a (U, T)
block, every inner loop runs over the T streams of one tile (contiguous, vectorized, the
weights broadcast), each unit's three gates are accumulated together over four rows per
pass (each state row loaded once for 12 multiply-adds), and the new states are scattered
back. A tile's working set (``(I + 3U + 6) * T`` floats) stays in L1/L2 cache. Tiles
with a repeated stream, and tiles of fewer than ``MIN_TILE_STREAMS``, run stream by
stream, so a stream listed twice still advances twice, in order.

Packed block layout for I inputs and U units (G = 3U)::

    kernel (I*G) | recurrent_kernel (U*G) | b_in (G) | b_rec (G) | dense (U) | dense_bias (1)

Single-stream state vector: ``h (U) | gx (G) | gh (G)`` — length ``7U``.

The same functions are compiled ahead of time by :mod:`edge_gru.aot` (``numba.pycc``),
so a device can run them without importing numba.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import numpy as np

from edge_gru.errors import KernelCacheError
from edge_gru.kernel_layout import (
    MIN_TILE_STREAMS,
    STATE_PER_UNIT,
    TILE,
    packed_size,
    stack_scratch_size,
    stack_state_size,
    tile_scratch_size,
)

try:
    import numba
except ImportError as exc:  # pragma: no cover - exercised only without numba installed
    from edge_gru.errors import MissingExtraError

    raise MissingExtraError("the numba backend", "device", module="numba") from exc

__all__ = [
    "JIT_OPTIONS",
    "MIN_TILE_STREAMS",
    "STATE_PER_UNIT",
    "TILE",
    "compiled_here",
    "gru_step",
    "gru_step_batch",
    "gru_windows",
    "packed_size",
    "stack_scratch_size",
    "stack_state_size",
    "stack_step",
    "stack_step_batch",
    "stack_windows",
    "tile_scratch_size",
    "warm_up",
]


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
        "Environment=NUMBA_CACHE_DIR=/var/cache/edge-gru), or build the kernels ahead of time "
        "with `edge-gru build-kernels` so that numba is not needed at run time"
    )


_ensure_cache_dir()

#: Compilation options, shared with the ahead-of-time build (edge_gru.aot).
JIT_OPTIONS: dict[str, Any] = {
    "cache": True,
    "nogil": True,
    "error_model": "numpy",
    "fastmath": {"nsz", "arcp", "contract", "afn"},
}
_JIT = JIT_OPTIONS

_F = np.float32
_CLAMP = _F(7.99881172180175781)
_A1, _A3, _A5, _A7 = (
    _F(4.89352455891786e-03),
    _F(6.37261928875436e-04),
    _F(1.48572235717979e-05),
    _F(5.12229709037114e-08),
)
_A9, _A11, _A13 = _F(-8.60467152213735e-11), _F(2.00018790482477e-13), _F(-2.76076847742355e-16)
_B0, _B2, _B4, _B6 = (
    _F(4.89352518554385e-03),
    _F(2.26843463243900e-03),
    _F(1.18534705686654e-04),
    _F(1.19825839466702e-06),
)
_HALF = _F(0.5)
_ONE = _F(1.0)
_ZERO = _F(0.0)


@numba.njit(inline="always", **_JIT)
def fast_tanh(x):  # type: ignore[no-untyped-def]
    """tanh to within 1e-6, branch-free and vectorizable (a clamped rational approximation)."""
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
def _rows_times(p, start, stride, v, out, n):  # type: ignore[no-untyped-def]
    """``out[:n] += v @ W`` where row k of W is ``p[start + k*stride : ... + n]``.

    Four rows per pass: each pass loads and stores ``out`` once for four fused multiply-adds.
    """
    k = 0
    m = v.shape[0]
    while k + 3 < m:
        v0 = v[k]
        v1 = v[k + 1]
        v2 = v[k + 2]
        v3 = v[k + 3]
        o = start + k * stride
        w0 = p[o : o + n]
        w1 = p[o + stride : o + stride + n]
        w2 = p[o + 2 * stride : o + 2 * stride + n]
        w3 = p[o + 3 * stride : o + 3 * stride + n]
        for j in range(n):
            out[j] = out[j] + v0 * w0[j] + v1 * w1[j] + v2 * w2[j] + v3 * w3[j]
        k += 4
    while k < m:
        vk = v[k]
        o = start + k * stride
        w = p[o : o + n]
        for j in range(n):
            out[j] += vk * w[j]
        k += 1


@numba.njit(inline="always", **_JIT)
def _gru_update(p, x, h, gx, gh, reset_after):  # type: ignore[no-untyped-def]
    """One GRU layer's step on one stream: ``h`` updated in place from input ``x``.

    ``p`` starts at the layer's block. Every inner loop indexes a slice from zero, so LLVM
    can prove the indices non-negative and vectorize (an offset index keeps numba's
    negative-index wrap check in the loop).
    """
    n_in = x.shape[0]
    u = h.shape[0]
    g = 3 * u
    rec = n_in * g
    b_in = rec + u * g
    b_rec = b_in + g
    bi = p[b_in:b_rec]
    for j in range(g):
        gx[j] = bi[j]
    _rows_times(p, 0, g, x, gx, g)
    if reset_after:
        br = p[b_rec : b_rec + g]
        for j in range(g):
            gh[j] = br[j]
        _rows_times(p, rec, g, h, gh, g)
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
        _rows_times(p, rec, g, h, zr, 2 * u)
        for j in range(2 * u):
            zr[j] = _HALF + _HALF * fast_tanh(_HALF * (gx[j] + zr[j]))
        rh = gx[:u]
        rgate = gh[u : 2 * u]  # not ``r``: the other branch's scalar r would not unify (AOT types both)
        for j in range(u):
            rh[j] = rgate[j] * h[j]
        cand = gh[2 * u :]
        gxc = gx[2 * u :]
        for j in range(u):
            cand[j] = gxc[j]
        _rows_times(p, rec + 2 * u, g, rh, cand, u)
        for j in range(u):
            z = zr[j]
            c = fast_tanh(cand[j])
            h[j] = z * h[j] + (_ONE - z) * c


@numba.njit(inline="always", **_JIT)
def _cell(p, x, h, gx, gh, reset_after):  # type: ignore[no-untyped-def]
    """One GRU step + Dense(1) on one stream (the single-layer block); ``h`` updated in place; returns y."""
    _gru_update(p, x, h, gx, gh, reset_after)
    u = h.shape[0]
    dense = x.shape[0] * 3 * u + u * 3 * u + 6 * u
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


# -- streams as columns ------------------------------------------------------------------------


@numba.njit(inline="always", **_JIT)
def _accumulate_cols(p, start, stride, v, t, n, out):  # type: ignore[no-untyped-def]
    """``out[:n] += sum_k p[start + k*stride] * v[k*t : k*t + n]`` over the rows k of ``v`` (m, t).

    ``v`` is a (m, t) block stored flat; four rows per pass load and store ``out`` once.
    """
    m = v.shape[0] // t
    k = 0
    while k + 3 < m:
        o = start + k * stride
        w0 = p[o]
        w1 = p[o + stride]
        w2 = p[o + 2 * stride]
        w3 = p[o + 3 * stride]
        v0 = v[k * t : k * t + n]
        v1 = v[(k + 1) * t : (k + 1) * t + n]
        v2 = v[(k + 2) * t : (k + 2) * t + n]
        v3 = v[(k + 3) * t : (k + 3) * t + n]
        for c in range(n):
            out[c] = out[c] + w0 * v0[c] + w1 * v1[c] + w2 * v2[c] + w3 * v3[c]
        k += 4
    while k < m:
        w0 = p[start + k * stride]
        v0 = v[k * t : k * t + n]
        for c in range(n):
            out[c] += w0 * v0[c]
        k += 1


@numba.njit(inline="always", **_JIT)
def _accumulate_cols3(p, start, off, stride, v, t, n, o0, o1, o2):  # type: ignore[no-untyped-def]
    """Three gates at once: ``o_q[:n] += sum_k p[start + q*off + k*stride] * v[k*t : k*t + n]``.

    Each row of ``v`` is loaded once for the three gates; four rows per pass, added one
    after the other (fused multiply-adds in the order of the single-row loop). Eight rows
    per pass measured no faster (24 broadcast weights no longer fit the registers).
    """
    m = v.shape[0] // t
    k = 0
    while k + 3 < m:
        o = start + k * stride
        a0 = p[o]
        a1 = p[o + stride]
        a2 = p[o + 2 * stride]
        a3 = p[o + 3 * stride]
        o += off
        b0 = p[o]
        b1 = p[o + stride]
        b2 = p[o + 2 * stride]
        b3 = p[o + 3 * stride]
        o += off
        c0 = p[o]
        c1 = p[o + stride]
        c2 = p[o + 2 * stride]
        c3 = p[o + 3 * stride]
        v0 = v[k * t : k * t + n]
        v1 = v[(k + 1) * t : (k + 1) * t + n]
        v2 = v[(k + 2) * t : (k + 2) * t + n]
        v3 = v[(k + 3) * t : (k + 3) * t + n]
        for c in range(n):
            e0 = v0[c]
            e1 = v1[c]
            e2 = v2[c]
            e3 = v3[c]
            o0[c] = o0[c] + a0 * e0 + a1 * e1 + a2 * e2 + a3 * e3
            o1[c] = o1[c] + b0 * e0 + b1 * e1 + b2 * e2 + b3 * e3
            o2[c] = o2[c] + c0 * e0 + c1 * e1 + c2 * e2 + c3 * e3
        k += 4
    while k < m:
        o = start + k * stride
        a0 = p[o]
        b0 = p[o + off]
        c0 = p[o + 2 * off]
        v0 = v[k * t : k * t + n]
        for c in range(n):
            e0 = v0[c]
            o0[c] += a0 * e0
            o1[c] += b0 * e0
            o2[c] += c0 * e0
        k += 1


@numba.njit(inline="always", **_JIT)
def _fill(out, value, n):  # type: ignore[no-untyped-def]
    for c in range(n):
        out[c] = value


@numba.njit(inline="always", **_JIT)
def _tile_step(p, xt, ht, hn, rh, acc, t, n, reset_after):  # type: ignore[no-untyped-def]
    """Advance the n stream columns of ``ht`` (U, t) into ``hn`` (U, t) on inputs ``xt`` (I, t).

    ``rh`` (U, t) and ``acc`` (6, t) are scratch. Columns past n are left untouched.
    """
    n_in = xt.shape[0] // t
    u = ht.shape[0] // t
    g = 3 * u
    rec = n_in * g
    b_in = rec + u * g
    b_rec = b_in + g
    az = acc[0:t]
    ar = acc[t : 2 * t]
    ac = acc[2 * t : 3 * t]
    xz = acc[3 * t : 4 * t]
    xr = acc[4 * t : 5 * t]
    xc = acc[5 * t : 6 * t]
    if reset_after:
        for j in range(u):
            _fill(xz, p[b_in + j], n)
            _fill(xr, p[b_in + u + j], n)
            _fill(xc, p[b_in + 2 * u + j], n)
            _accumulate_cols3(p, j, u, g, xt, t, n, xz, xr, xc)
            _fill(az, p[b_rec + j], n)
            _fill(ar, p[b_rec + u + j], n)
            _fill(ac, p[b_rec + 2 * u + j], n)
            _accumulate_cols3(p, rec + j, u, g, ht, t, n, az, ar, ac)
            hj = ht[j * t : j * t + n]
            out = hn[j * t : j * t + n]
            for c in range(n):
                z = _HALF + _HALF * fast_tanh(_HALF * (xz[c] + az[c]))
                r = _HALF + _HALF * fast_tanh(_HALF * (xr[c] + ar[c]))
                cand = fast_tanh(xc[c] + r * ac[c])
                out[c] = z * hj[c] + (_ONE - z) * cand
    else:
        # Pass 1: z into hn and r * h into rh for every unit. Pass 2: candidate and new state.
        for j in range(u):
            _fill(xz, p[b_in + j], n)
            _fill(xr, p[b_in + u + j], n)
            _accumulate_cols(p, j, g, xt, t, n, xz)
            _accumulate_cols(p, u + j, g, xt, t, n, xr)
            _accumulate_cols(p, rec + j, g, ht, t, n, xz)
            _accumulate_cols(p, rec + u + j, g, ht, t, n, xr)
            hj = ht[j * t : j * t + n]
            zj = hn[j * t : j * t + n]
            rhj = rh[j * t : j * t + n]
            for c in range(n):
                zj[c] = _HALF + _HALF * fast_tanh(_HALF * xz[c])
                rhj[c] = (_HALF + _HALF * fast_tanh(_HALF * xr[c])) * hj[c]
        for j in range(u):
            _fill(xc, p[b_in + 2 * u + j], n)
            _accumulate_cols(p, 2 * u + j, g, xt, t, n, xc)
            _accumulate_cols(p, rec + 2 * u + j, g, rh, t, n, xc)
            hj = ht[j * t : j * t + n]
            out = hn[j * t : j * t + n]
            for c in range(n):
                z = out[c]
                out[c] = z * hj[c] + (_ONE - z) * fast_tanh(xc[c])


@numba.njit(inline="always", **_JIT)
def _tile_dense(p, hn, t, n, u, dense, y):  # type: ignore[no-untyped-def]
    """``y[:n] = hn.T @ dense_kernel + dense_bias`` for the n columns of ``hn`` (U, t)."""
    _fill(y, p[dense + u], n)
    _accumulate_cols(p, dense, 1, hn, t, n, y)


@numba.njit(inline="always", **_JIT)
def _has_duplicates(rows, start, n):  # type: ignore[no-untyped-def]
    """Whether ``rows[start:start+n]`` repeats a row (such a tile must run stream by stream)."""
    dup = False
    for a in range(start + 1, start + n):
        ra = rows[a]
        for b in range(start, a):
            dup |= rows[b] == ra
    return dup


@numba.njit(inline="always", **_JIT)
def _gather_tile(x, h, rows, start, n, t, xt, ht):  # type: ignore[no-untyped-def]
    """Streams ``rows[start:start+n]`` into tile columns: inputs ``x`` (S, I) -> ``xt`` (I, t), states -> ``ht``."""
    n_in = x.shape[1]
    width = h.shape[1]
    for c in range(n):
        xs = x[start + c]
        for i in range(n_in):
            xt[i * t + c] = xs[i]
        hs = h[rows[start + c]]
        for k in range(width):
            ht[k * t + c] = hs[k]


@numba.njit(inline="always", **_JIT)
def _scatter_tile(src, rows, start, n, t, h):  # type: ignore[no-untyped-def]
    """Tile columns of states ``src`` (width, t) back into rows ``rows[start:start+n]`` of ``h``."""
    width = h.shape[1]
    for c in range(n):
        hs = h[rows[start + c]]
        for k in range(width):
            hs[k] = src[k * t + c]


@numba.njit(**_JIT)
def gru_step_batch(p, x, h, rows, scratch, y, reset_after):  # type: ignore[no-untyped-def]
    """S streams, one step each: ``x`` (S, I); ``h`` (N, U) rows ``rows[s]`` updated in place.

    Rows are processed in order, so a stream listed twice advances twice. ``scratch`` has
    length ``tile_scratch_size(U, I, T)`` for tiles of T streams (at least 6U); ``y`` (S,)
    receives the outputs.
    """
    n_in = x.shape[1]
    u = h.shape[1]
    g = 3 * u
    s_total = x.shape[0]
    t = scratch.shape[0] // (n_in + 3 * u + 6)
    dense = n_in * g + u * g + 2 * g
    if t < MIN_TILE_STREAMS:
        t = 0
    xt = scratch[: n_in * t]
    ht = scratch[n_in * t : (n_in + u) * t]
    hn = scratch[(n_in + u) * t : (n_in + 2 * u) * t]
    rh = scratch[(n_in + 2 * u) * t : (n_in + 3 * u) * t]
    acc = scratch[(n_in + 3 * u) * t : (n_in + 3 * u + 6) * t]
    gx = scratch[:g]
    gh = scratch[g : 2 * g]
    start = 0
    while start < s_total:
        n = min(t, s_total - start)
        if n < MIN_TILE_STREAMS or _has_duplicates(rows, start, n):
            stop = start + max(n, 1)
            for s in range(start, stop):
                y[s] = _cell(p, x[s], h[rows[s]], gx, gh, reset_after)
            start = stop
            continue
        _gather_tile(x, h, rows, start, n, t, xt, ht)
        _tile_step(p, xt, ht, hn, rh, acc, t, n, reset_after)
        _scatter_tile(hn, rows, start, n, t, h)
        _tile_dense(p, hn, t, n, u, dense, y[start : start + n])
        start += n


@numba.njit(inline="always", **_JIT)
def _units(p, n_in):  # type: ignore[no-untyped-def]
    """U from the packed block's length ``3U^2 + (3I + 7)U + 1``."""
    b = 3 * n_in + 7
    return int(round((np.sqrt(b * b + 12.0 * (p.shape[0] - 1)) - b) / 6.0))  # noqa: RUF046 - typed for numba


@numba.njit(**_JIT)
def gru_windows(p, windows, scratch, y, reset_after):  # type: ignore[no-untyped-def]
    """Run each (W, I) window of ``windows`` (N, W, I) from a zero state; ``y`` (N,) gets the last output.

    ``scratch`` has length ``tile_scratch_size(U, I, T)`` to run T windows at a time as
    columns, or 7U to run them one by one.
    """
    n_win = windows.shape[0]
    w_len = windows.shape[1]
    n_in = windows.shape[2]
    u = _units(p, n_in)
    g = 3 * u
    dense = n_in * g + u * g + 2 * g
    t = scratch.shape[0] // (n_in + 3 * u + 6)
    if t < MIN_TILE_STREAMS or n_win < MIN_TILE_STREAMS:
        h = scratch[:u]
        gx = scratch[u : u + g]
        gh = scratch[u + g : u + 2 * g]
        for m in range(n_win):
            for j in range(u):
                h[j] = _ZERO
            out = _ZERO
            for step in range(w_len):
                out = _cell(p, windows[m, step], h, gx, gh, reset_after)
            y[m] = out
        return
    xt = scratch[: n_in * t]
    ht = scratch[n_in * t : (n_in + u) * t]
    hn = scratch[(n_in + u) * t : (n_in + 2 * u) * t]
    rh = scratch[(n_in + 2 * u) * t : (n_in + 3 * u) * t]
    acc = scratch[(n_in + 3 * u) * t : (n_in + 3 * u + 6) * t]
    for start in range(0, n_win, t):
        n = min(t, n_win - start)
        for k in range(u * t):
            hn[k] = _ZERO
        for step in range(w_len):
            for k in range(u * t):
                ht[k] = hn[k]
            for c in range(n):
                xs = windows[start + c, step]
                for i in range(n_in):
                    xt[i * t + c] = xs[i]
            _tile_step(p, xt, ht, hn, rh, acc, t, n, reset_after)
        _tile_dense(p, hn, t, n, u, dense, y[start : start + n])


# -- stacks of layers (edge_gru.layers): any number of GRU layers, then dense layers -------------


@numba.njit(inline="always", **_JIT)
def _activate(v, n, code):  # type: ignore[no-untyped-def]
    """Dense activation in place on ``v[:n]``: 0 linear, 1 relu, 2 tanh, 3 sigmoid (layers.ACTIVATIONS)."""
    if code == 1:
        for c in range(n):
            v[c] = max(v[c], _ZERO)
    elif code == 2:
        for c in range(n):
            v[c] = fast_tanh(v[c])
    elif code == 3:
        for c in range(n):
            v[c] = _HALF + _HALF * fast_tanh(_HALF * v[c])


@numba.njit(inline="always", **_JIT)
def _dims(meta, n_in):  # type: ignore[no-untyped-def]
    """(state size, widest GRU, widest dense, widest activation) of a layer table."""
    hs = 0
    umax = 1
    dmax = 1
    wmax = n_in
    for layer in range(meta.shape[0]):
        u = meta[layer, 1]
        wmax = max(wmax, u)
        if meta[layer, 0] == 0:
            hs += u
            umax = max(umax, u)
        else:
            dmax = max(dmax, u)
    return hs, umax, dmax, wmax


@numba.njit(**_JIT)
def _stack_one(p, meta, x, h, gx, gh, d0, d1, y):  # type: ignore[no-untyped-def]
    """One stream, one step of the whole stack: ``h`` (state size) in place, ``y`` (horizon) out.

    Not inlined: the stack kernels share one compiled copy (the ahead-of-time build stays small).
    """
    v = x
    off_h = 0
    flip = 0
    for layer in range(meta.shape[0]):
        u = meta[layer, 1]
        off = meta[layer, 3]
        n_in = v.shape[0]
        if meta[layer, 0] == 0:
            hl = h[off_h : off_h + u]
            size = n_in * 3 * u + u * 3 * u + 6 * u
            _gru_update(p[off : off + size], v, hl, gx[: 3 * u], gh[: 3 * u], meta[layer, 2] != 0)
            v = hl
            off_h += u
        else:
            out = d0[:u] if flip == 0 else d1[:u]
            flip = 1 - flip
            bias = p[off + n_in * u : off + n_in * u + u]
            for k in range(u):
                out[k] = bias[k]
            _rows_times(p, off, u, v, out, u)
            _activate(out, u, meta[layer, 2])
            v = out
    for k in range(y.shape[0]):
        y[k] = v[k]


@numba.njit(**_JIT)
def stack_step(p, meta, x, state, y):  # type: ignore[no-untyped-def]
    """One stream, one step: ``state`` is ``h (state size) | scratch`` (``stack_state_size``); ``y`` (horizon)."""
    hs, umax, dmax, _ = _dims(meta, x.shape[0])
    o = hs
    gx = state[o : o + 3 * umax]
    gh = state[o + 3 * umax : o + 6 * umax]
    d0 = state[o + 6 * umax : o + 6 * umax + dmax]
    d1 = state[o + 6 * umax + dmax : o + 6 * umax + 2 * dmax]
    _stack_one(p, meta, x, state[:hs], gx, gh, d0, d1, y)


@numba.njit(**_JIT)
def _stack_tile_in(p, meta, hs_t, a, b, rh, acc, t, n, n_in):  # type: ignore[no-untyped-def]
    """One step of the stack on ``n`` stream columns of tiles of ``t``.

    Inputs (n_in, t) in ``a``; the states ``hs_t`` (state size, t) are updated in place (each
    GRU layer's new state is the next layer's input where it lies); dense layers ping-pong
    between ``a`` and ``b``. Returns 0 when the output (horizon, t) is in ``a``, 1 in ``b``.
    """
    cur = 0  # where this layer's input lies: 0 a, 1 b, 2 hs_t rows [cur_row, cur_row + rows_in)
    cur_row = 0
    rows_in = n_in
    off_h = 0
    for layer in range(meta.shape[0]):
        u = meta[layer, 1]
        off = meta[layer, 3]
        if cur == 0:
            xin = a[: rows_in * t]
        elif cur == 1:
            xin = b[: rows_in * t]
        else:
            xin = hs_t[cur_row * t : (cur_row + rows_in) * t]
        if meta[layer, 0] == 0:
            ht = hs_t[off_h * t : (off_h + u) * t]
            hn = b[: u * t] if cur == 0 else a[: u * t]
            size = rows_in * 3 * u + u * 3 * u + 6 * u
            _tile_step(p[off : off + size], xin, ht, hn, rh[: u * t], acc, t, n, meta[layer, 2] != 0)
            for k in range(u):
                src = hn[k * t : k * t + n]
                dst = ht[k * t : k * t + n]
                for c in range(n):
                    dst[c] = src[c]
            cur = 2
            cur_row = off_h
            off_h += u
        else:
            nxt = 1 if cur == 0 else 0
            out = b[: u * t] if nxt == 1 else a[: u * t]
            for o in range(u):
                col = out[o * t : o * t + n]
                _fill(col, p[off + rows_in * u + o], n)
                _accumulate_cols(p, off + o, u, xin, t, n, col)
                _activate(col, n, meta[layer, 2])
            cur = nxt
        rows_in = u
    return cur


@numba.njit(**_JIT)
def stack_step_batch(p, meta, x, h, rows, scratch, y):  # type: ignore[no-untyped-def]
    """S streams, one step each: ``x`` (S, I); ``h`` (N, state size) rows ``rows[s]`` in place; ``y`` (S, horizon).

    Tiles of T streams run as columns (``stack_scratch_size``); a tile with a repeated
    stream, or of fewer than ``MIN_TILE_STREAMS``, runs stream by stream, in order.
    """
    n_in = x.shape[1]
    s_total = x.shape[0]
    hs, umax, dmax, wmax = _dims(meta, n_in)
    horizon = y.shape[1]
    t = scratch.shape[0] // (hs + 2 * wmax + umax + 6)
    if t < MIN_TILE_STREAMS:
        t = 0
    hs_t = scratch[: hs * t]
    a = scratch[hs * t : (hs + wmax) * t]
    b = scratch[(hs + wmax) * t : (hs + 2 * wmax) * t]
    rh = scratch[(hs + 2 * wmax) * t : (hs + 2 * wmax + umax) * t]
    acc = scratch[(hs + 2 * wmax + umax) * t : (hs + 2 * wmax + umax + 6) * t]
    gx = scratch[: 3 * umax]
    gh = scratch[3 * umax : 6 * umax]
    d0 = scratch[6 * umax : 6 * umax + dmax]
    d1 = scratch[6 * umax + dmax : 6 * umax + 2 * dmax]
    start = 0
    while start < s_total:
        n = min(t, s_total - start)
        if n < MIN_TILE_STREAMS or _has_duplicates(rows, start, n):
            stop = start + max(n, 1)
            for s in range(start, stop):
                _stack_one(p, meta, x[s], h[rows[s]], gx, gh, d0, d1, y[s])
            start = stop
            continue
        _gather_tile(x, h, rows, start, n, t, a, hs_t)
        where = _stack_tile_in(p, meta, hs_t, a, b, rh, acc, t, n, n_in)
        out = a if where == 0 else b
        _scatter_tile(hs_t, rows, start, n, t, h)
        for c in range(n):
            ys = y[start + c]
            for k in range(horizon):
                ys[k] = out[k * t + c]
        start += n


@numba.njit(**_JIT)
def stack_windows(p, meta, windows, scratch, y):  # type: ignore[no-untyped-def]
    """Run each (W, I) window of ``windows`` (N, W, I) from a zero state; ``y`` (N, horizon) gets the last output."""
    n_win = windows.shape[0]
    w_len = windows.shape[1]
    n_in = windows.shape[2]
    hs, umax, dmax, wmax = _dims(meta, n_in)
    horizon = y.shape[1]
    t = scratch.shape[0] // (hs + 2 * wmax + umax + 6)
    if t < MIN_TILE_STREAMS or n_win < MIN_TILE_STREAMS:
        h = scratch[:hs]
        o = hs
        gx = scratch[o : o + 3 * umax]
        gh = scratch[o + 3 * umax : o + 6 * umax]
        d0 = scratch[o + 6 * umax : o + 6 * umax + dmax]
        d1 = scratch[o + 6 * umax + dmax : o + 6 * umax + 2 * dmax]
        for m in range(n_win):
            for j in range(hs):
                h[j] = _ZERO
            for step in range(w_len):
                _stack_one(p, meta, windows[m, step], h, gx, gh, d0, d1, y[m])
        return
    hs_t = scratch[: hs * t]
    a = scratch[hs * t : (hs + wmax) * t]
    b = scratch[(hs + wmax) * t : (hs + 2 * wmax) * t]
    rh = scratch[(hs + 2 * wmax) * t : (hs + 2 * wmax + umax) * t]
    acc = scratch[(hs + 2 * wmax + umax) * t : (hs + 2 * wmax + umax + 6) * t]
    for start in range(0, n_win, t):
        n = min(t, n_win - start)
        for k in range(hs * t):
            hs_t[k] = _ZERO
        where = 0
        for step in range(w_len):
            for c in range(n):
                xs = windows[start + c, step]
                for i in range(n_in):
                    a[i * t + c] = xs[i]
            where = _stack_tile_in(p, meta, hs_t, a, b, rh, acc, t, n, n_in)
        out = a if where == 0 else b
        for c in range(n):
            ys = y[start + c]
            for k in range(horizon):
                ys[k] = out[k * t + c]


def compiled_here() -> int:
    """Kernel signatures this process compiled rather than loaded from numba's cache (0: all cached)."""
    kernels = (gru_step, gru_step_batch, gru_windows, stack_step, stack_step_batch, stack_windows)
    return sum(sum(f.stats.cache_misses.values()) for f in kernels)


def warm_up(units: int = 4, features: int = 1) -> None:
    """Compile (or load from cache) every kernel signature the backends use."""
    p = np.zeros(packed_size(units, features), dtype=np.float32)
    scratch = np.zeros(tile_scratch_size(units, features), np.float32)
    for reset_after in (True, False):
        gru_step(p, np.zeros(features, np.float32), np.zeros(STATE_PER_UNIT * units, np.float32), reset_after)
        gru_step_batch(
            p,
            np.zeros((1, features), np.float32),
            np.zeros((1, units), np.float32),
            np.zeros(1, np.int64),
            scratch,
            np.zeros(1, np.float32),
            reset_after,
        )
        gru_windows(p, np.zeros((1, 1, features), np.float32), scratch, np.zeros(1, np.float32), reset_after)
    from edge_gru.layers import DenseLayer, GRULayer, Network, NetworkWeights

    net = Network(features, (GRULayer(units), GRULayer(units, reset_after=False), DenseLayer(2, "relu"), DenseLayer(1)))
    weights = NetworkWeights(
        net, tuple({k: np.zeros(shape, np.float32) for k, shape in s.items()} for s in net.shapes())
    )
    sp, meta = weights.packed(), weights.meta()
    stack_scratch = np.zeros(stack_scratch_size(net), np.float32)
    stack_step(
        sp, meta, np.zeros(features, np.float32), np.zeros(stack_state_size(net), np.float32), np.zeros(1, np.float32)
    )
    stack_step_batch(
        sp,
        meta,
        np.zeros((1, features), np.float32),
        np.zeros((1, net.state_size), np.float32),
        np.zeros(1, np.int64),
        stack_scratch,
        np.zeros((1, 1), np.float32),
    )
    stack_windows(sp, meta, np.zeros((1, 1, features), np.float32), stack_scratch, np.zeros((1, 1), np.float32))
