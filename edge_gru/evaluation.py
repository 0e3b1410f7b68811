"""One-step-ahead accuracy of a model on recorded series, measured the way the daemon serves.

Every reading goes through :meth:`StreamPool.update_detailed` with its timestamp, so
warm-up, NaN drops and gap resets apply exactly as on the device. Forecasts are paired
with actuals by the one rule of :mod:`edge_gru.scoring` (the next accepted reading, about
one period later); persistence and, optionally, seasonal-naive are scored on exactly the
same pairs, so the ratio ``mae / persistence_mae`` is a fair comparison.
Several series run as several streams of one pool, one reading of each per call, as a
gateway would batch them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from edge_gru.adaptation import AdaptationSpec
from edge_gru.pool import Status
from edge_gru.scoring import Scores, next_reading_pairs, step_pairs
from edge_gru.series import Series

__all__ = ["Scores", "StreamRun", "evaluate_series", "run_streams", "score", "score_steps"]

if TYPE_CHECKING:
    from edge_gru.model import Model


@dataclass(frozen=True)
class StreamRun:
    """Everything one series produced in the pool, row-aligned with the series."""

    forecasts: np.ndarray  # (T,) forecast of row t + 1 made at row t; NaN when none
    status: np.ndarray  # (T,) Status codes
    resets: np.ndarray  # (T,) bool: a gap reset happened before this row
    pairs: np.ndarray  # (T,) bool: the forecast at row t is scored against the next accepted row
    forecast_ts: np.ndarray | None = None  # (T,) epoch seconds the forecast is for; NaN when unknown
    lower: np.ndarray | None = None  # (T,) the forecast's interval (adaptation on); NaN when none
    upper: np.ndarray | None = None
    anomaly: np.ndarray | None = None  # (T,) bool: row t was flagged
    values: np.ndarray | None = None  # (T, horizon) every step's forecast made at row t (horizon > 1)


def run_streams(
    model: Model,
    streams: Mapping[str, Series],
    *,
    max_streams: int | None = None,
    adaptation: AdaptationSpec | None = None,
) -> dict[str, StreamRun]:
    """Feed each series as its own stream through one pool, one reading per stream per call."""
    ids = list(streams)
    pool = model.pool(max_streams=max_streams or max(len(ids), 1), adaptation=adaptation)
    lengths = {sid: len(s) for sid, s in streams.items()}
    out = {
        sid: (np.full(n, np.nan), np.zeros(n, dtype=np.uint8), np.zeros(n, dtype=bool), np.full(n, np.nan))
        for sid, n in lengths.items()
    }
    bands = {sid: (np.full(n, np.nan), np.full(n, np.nan), np.zeros(n, dtype=bool)) for sid, n in lengths.items()}
    horizon = model.manifest.horizon
    steps = {sid: np.full((n, horizon), np.nan) for sid, n in lengths.items()} if horizon > 1 else None
    timed = all(s.times is not None for s in streams.values())
    for t in range(max(lengths.values(), default=0)):
        live = [sid for sid in ids if t < lengths[sid]]
        values = np.stack([streams[sid].values[t] for sid in live])
        ts = np.array([streams[sid].times[t] for sid in live]) if timed else None  # type: ignore[index]
        now = float(ts.max()) if ts is not None else float(t)
        result = pool.update_detailed(live, values, ts, now=now)
        for k, sid in enumerate(live):
            forecasts, status, resets, forecast_ts = out[sid]
            forecasts[t] = result.forecasts[k]
            status[t] = result.status[k]
            resets[t] = result.resets[k]
            forecast_ts[t] = result.forecast_ts[k]
            if steps is not None and result.values is not None:
                steps[sid][t] = result.values[k]
            if result.lower is not None and result.upper is not None and result.anomaly is not None:
                lower, upper, anomaly = bands[sid]
                lower[t], upper[t], anomaly[t] = result.lower[k], result.upper[k], result.anomaly[k]
    runs = {}
    for sid, (forecasts, status, resets, forecast_ts) in out.items():
        pairs = _pairs(streams[sid], forecasts, status)
        own = None if steps is None else steps[sid]
        if pool.adapter is not None:
            runs[sid] = StreamRun(forecasts, status, resets, pairs, forecast_ts, *bands[sid], values=own)
        else:
            runs[sid] = StreamRun(forecasts, status, resets, pairs, forecast_ts, values=own)
    return runs


_ACCEPTED = (Status.FORECAST, Status.WARMUP)


def _next_accepted(status: np.ndarray) -> np.ndarray:
    """(T,) the row of the next reading the pool accepted after each row; -1 when none."""
    acc = np.flatnonzero(np.isin(status, _ACCEPTED))
    nxt = np.full(status.shape[0], -1, dtype=np.int64)
    pos = np.searchsorted(acc, np.arange(status.shape[0]), side="right")
    has = pos < acc.size
    nxt[has] = acc[pos[has]]
    return nxt


def _accepted_times(series: Series, status: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """The accepted rows, their times and the sample period the pairing rule measures gaps in."""
    acc = np.flatnonzero(np.isin(status, _ACCEPTED))
    if series.times is not None and series.period:
        return acc, series.times[acc], series.period
    return acc, acc.astype(np.float64), 1.0  # no time column: the next accepted reading must be the next row


def _pairs(series: Series, forecasts: np.ndarray, status: np.ndarray) -> np.ndarray:
    """Rows t whose forecast is scored, by the one pairing rule over the accepted readings."""
    pairs = np.zeros(len(series), dtype=bool)
    acc, ts, period = _accepted_times(series, status)
    has_forecast = (status[acc] == Status.FORECAST) & np.isfinite(forecasts[acc])
    pairs[acc[next_reading_pairs(ts, has_forecast, period)]] = True
    return pairs


def score(
    series: Series,
    run: StreamRun,
    *,
    start: int = 0,
    stop: int | None = None,
    season: int | None = None,
) -> Scores:
    """Scores for forecasts whose *actual* row lies in ``[start, stop)``."""
    stop = len(series) if stop is None else stop
    target = series.target_values
    rows = np.flatnonzero(run.pairs)
    actual_rows = _next_accepted(run.status)[rows]
    ok = (actual_rows >= start) & (actual_rows < stop) & (actual_rows >= 0)
    rows, actual_rows = rows[ok], actual_rows[ok]
    if season:
        # seasonal-naive forecasts the actual row with the row one season before it; score only
        # where that exists, so all three methods see the same pairs.
        back = actual_rows - season
        ok = back >= 0
        ok[ok] = np.isfinite(target[back[ok]])
        rows, actual_rows = rows[ok], actual_rows[ok]
    actual = target[actual_rows]
    seasonal = target[actual_rows - season] - actual if season else None
    scores = Scores.of(run.forecasts[rows] - actual, target[rows] - actual, seasonal)
    if run.lower is not None and run.upper is not None and run.anomaly is not None and rows.size:
        lo, hi = run.lower[rows], run.upper[rows]
        width = hi - lo
        scores = replace(
            scores,
            coverage=float(np.mean((lo <= actual) & (actual <= hi))),
            interval_width=float(np.nanmean(width)) if np.isfinite(width).any() else None,
            anomalies=int(run.anomaly[start:stop].sum()),
        )
    if run.values is not None:
        scores.extra["horizon"] = score_steps(series, run, start=start, stop=stop)
    return scores


def score_steps(series: Series, run: StreamRun, *, start: int = 0, stop: int | None = None) -> list[dict[str, float]]:
    """Each horizon step scored on its own pairs: step k against the k-th next accepted reading.

    Persistence for step k is "reading t + k equals reading t", on the same pairs.
    """
    if run.values is None:
        return []
    stop = len(series) if stop is None else stop
    target = series.target_values
    acc, ts, period = _accepted_times(series, run.status)
    out = []
    for k in range(1, run.values.shape[1] + 1):
        forecast = run.values[acc, k - 1]
        has = (run.status[acc] == Status.FORECAST) & np.isfinite(forecast)
        j = step_pairs(ts, has, period, k)
        rows, actual_rows = acc[j], acc[j + k]
        ok = (actual_rows >= start) & (actual_rows < stop)
        rows, actual_rows = rows[ok], actual_rows[ok]
        actual = target[actual_rows]
        step = Scores.of(run.values[rows, k - 1] - actual, target[rows] - actual)
        out.append(
            {"step": k, "n": step.n, "mae": step.mae, "persistence_mae": step.persistence_mae, "ratio": step.ratio}
        )
    return out


def evaluate_series(
    model: Model,
    series: Series,
    *,
    start: int = 0,
    stop: int | None = None,
    season: int | None = None,
    adaptation: AdaptationSpec | None = None,
) -> Scores:
    """Run ``series`` through a fresh pool from its first row; score the actuals in ``[start, stop)``."""
    run = run_streams(model, {"series": series}, adaptation=adaptation)["series"]
    return score(series, run, start=start, stop=stop, season=season)
