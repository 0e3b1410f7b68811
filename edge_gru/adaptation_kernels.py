"""Numba versions of :class:`edge_gru.adaptation.Adapter`'s two per-reading phases.

The numpy code in :mod:`edge_gru.adaptation` is the reference: these loops compute the same
numbers row by row in one pass, without the gathers and scatters numpy needs (tested to
agree to 1e-12). Imported only when the pool runs on the numba backend.
"""

from __future__ import annotations

import math
from typing import Any

import numba
import numpy as np

# exact IEEE arithmetic (no fastmath): the numpy reference is matched, not approximated
_JIT: dict[str, Any] = {"cache": True, "nogil": True, "error_model": "numpy"}


@numba.njit(**_JIT)
def observe(
    rows: np.ndarray,
    x: np.ndarray,
    st: tuple,  # type: ignore[type-arg]
    p: np.ndarray,
    anomaly: np.ndarray,
    hold: np.ndarray,
    replacement: np.ndarray,
) -> None:  # pragma: no cover - compiled
    pred, loss, lw, last, fc_, radius_, scale_, sw_, mult_, p0_, run_, held_, n_ = st
    a, keep, sigma_per_mae, sw_anomaly, k_sig, gamma, miss_target, m_max = (
        p[0],
        p[1],
        p[2],
        p[3],
        p[4],
        p[5],
        p[6],
        p[7],
    )
    a_scale, ka, a_p0, stuck, stuck_log, min_run, hold_out, max_held = (
        p[8], p[9], p[10], p[11], p[12], p[13], p[14], p[15]
    )  # fmt: skip
    k = pred.shape[1]
    for i in range(rows.shape[0]):
        r = rows[i]
        xi = x[i]
        fc = fc_[r]
        has_fc = math.isfinite(fc)
        resid = abs(xi - fc)
        for j in range(k):
            pj = pred[r, j]
            if math.isfinite(pj):
                loss[r, j] = keep * loss[r, j] + a * abs(pj - xi)
                lw[r, j] = keep * lw[r, j] + a
        sw = sw_[r]
        scale = scale_[r] / (sw if sw > 0 else 1.0)
        miss = has_fc and resid > radius_[r]
        sigma = sigma_per_mae * scale
        seasoned = sw >= sw_anomaly
        outlier = has_fc and k_sig > 0 and resid > k_sig * sigma and seasoned
        flag = outlier
        if has_fc:
            m = mult_[r] + gamma * ((1.0 if miss else 0.0) - miss_target)
            mult_[r] = min(max(m, 0.0), m_max)
            rr = min(resid, 4.0 * sigma) if seasoned else resid
            scale_[r] = ka * scale_[r] + a_scale * rr
            sw_[r] = ka * sw + a_scale
        n = n_[r]
        repeat = n > 0 and xi == last[r]
        run = run_[r] + 1.0 if repeat else 0.0
        run_[r] = run
        p0 = p0_[r]
        if n > 0 and run <= 1.0:
            p0_[r] = p0 + a_p0 * ((1.0 if repeat else 0.0) - p0)
        if stuck > 0 and run >= min_run:
            need = max(min_run, math.ceil(stuck_log / math.log(min(max(p0, 1e-12), 0.999))))
            if run == need and n > 20:
                flag = True
        h = False
        if hold_out > 0:
            h = outlier and held_[r] < max_held
            held_[r] = held_[r] + 1.0 if h else 0.0
        anomaly[i] = flag
        hold[i] = h
        replacement[i] = fc if h else xi


@numba.njit(inline="always", **_JIT)
def _power(base: float, e: float, int_e: int) -> float:  # pragma: no cover - compiled
    """``base ** e``; by squaring when ``e`` is a small whole number (the default 30): pow() costs more."""
    if int_e < 0:
        return base**e
    out = 1.0
    b = base
    k = int_e
    while k:
        if k & 1:
            out *= b
        b *= b
        k >>= 1
    return out


@numba.njit(**_JIT)
def forecast(
    rows: np.ndarray,
    x: np.ndarray,
    gru: np.ndarray,
    st: tuple,  # type: ignore[type-arg]
    holt_alpha: np.ndarray,
    holt_beta: np.ndarray,
    p: np.ndarray,
    out_fc: np.ndarray,
    out_radius: np.ndarray,
) -> None:  # pragma: no cover - compiled
    pred, loss, lw, last, level_, trend_, ring, n_, fc_, radius_, scale_, sw_, mult_ = st
    phi, inv_a, min_scored, sharp, sw_interval, seasonal = p[0], p[1], p[2], p[3], p[4], int(p[5])
    int_sharp = int(sharp) if sharp == int(sharp) and 0 <= sharp <= 64 else -1
    holts = holt_alpha.shape[0]
    k = pred.shape[1]
    season = ring.shape[1]
    for i in range(rows.shape[0]):
        r = rows[i]
        xi = x[i]
        n = n_[r] + 1.0
        n_[r] = n
        first = n == 1.0
        last[r] = xi
        pred[r, 0] = gru[i]
        pred[r, 1] = xi
        for h in range(holts):
            level0 = level_[r, h]
            trend0 = trend_[r, h]
            if first:
                level = xi
                trend = 0.0
            else:
                ah = holt_alpha[h]
                bh = holt_beta[h]
                level = ah * xi + (1.0 - ah) * (level0 + phi * trend0)
                trend = bh * (level - level0) + (1.0 - bh) * phi * trend0
            level_[r, h] = level
            trend_[r, h] = trend
            pred[r, 2 + h] = level + phi * trend
        if seasonal >= 0:
            ni = int(n)
            ring[r, (ni - 1) % season] = xi
            pred[r, seasonal] = ring[r, ni % season] if n >= season else np.nan
        best = np.inf
        for j in range(k):
            if math.isfinite(pred[r, j]) and lw[r, j] * inv_a >= min_scored:
                best = min(best, loss[r, j] / max(lw[r, j], 1e-300))
        best = max(best, 1e-300) if math.isfinite(best) else 1.0
        total = 0.0
        acc = 0.0
        for j in range(k):
            pj = pred[r, j]
            if math.isfinite(pj) and lw[r, j] * inv_a >= min_scored:
                mae = loss[r, j] / max(lw[r, j], 1e-300)
                w = _power(best / max(mae, 1e-300), sharp, int_sharp)
                total += w
                if w > 0:
                    acc += w * pj
        fallback = gru[i] if math.isfinite(gru[i]) else xi  # no track record yet: the GRU, else persistence
        fc = acc / total if total > 0 else fallback
        sw = sw_[r]
        radius = mult_[r] * (scale_[r] / (sw if sw > 0 else 1.0)) if sw >= sw_interval else np.nan
        fc_[r] = fc
        radius_[r] = radius
        out_fc[i] = fc
        out_radius[i] = radius
