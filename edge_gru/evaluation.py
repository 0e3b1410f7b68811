"""One-step-ahead accuracy of a model on recorded series, measured the way the daemon serves.

Every reading goes through :meth:`StreamPool.update_detailed` with its timestamp, so
warm-up, NaN drops and gap resets apply exactly as on the device. A forecast made at row
``t`` is scored against row ``t + 1`` when that row is present and arrives about one
period later; persistence (the last value) and, optionally, seasonal-naive are scored on
exactly the same pairs, so the ratio ``mae / persistence_mae`` is a fair comparison.
Several series run as several streams of one pool, one reading of each per call, as a
gateway would batch them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_gru.pool import Status
from edge_gru.series import Series

if TYPE_CHECKING:
    from edge_gru.model import Model


@dataclass(frozen=True)
class Scores:
    """Errors of the model and the naive forecasts on the same (forecast, actual) pairs."""

    n: int
    mae: float
    rmse: float
    persistence_mae: float
    persistence_rmse: float
    seasonal_mae: float | None = None
    seasonal_rmse: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        """Model MAE over persistence MAE: below 1 means the model beats persistence."""
        return self.mae / self.persistence_mae if self.persistence_mae > 0 else float("nan")

    def to_json(self) -> dict[str, Any]:
        data = {k: v for k, v in asdict(self).items() if k != "extra" and v is not None}
        data["ratio"] = self.ratio
        data.update(self.extra)
        return data


@dataclass(frozen=True)
class StreamRun:
    """Everything one series produced in the pool, row-aligned with the series."""

    forecasts: np.ndarray  # (T,) forecast of row t + 1 made at row t; NaN when none
    status: np.ndarray  # (T,) Status codes
    resets: np.ndarray  # (T,) bool: a gap reset happened before this row
    pairs: np.ndarray  # (T,) bool: forecast at t is scored against row t + 1


def run_streams(model: Model, streams: Mapping[str, Series], *, max_streams: int | None = None) -> dict[str, StreamRun]:
    """Feed each series as its own stream through one pool, one reading per stream per call."""
    ids = list(streams)
    pool = model.pool(max_streams=max_streams or max(len(ids), 1))
    lengths = {sid: len(s) for sid, s in streams.items()}
    out = {
        sid: (np.full(n, np.nan), np.zeros(n, dtype=np.uint8), np.zeros(n, dtype=bool)) for sid, n in lengths.items()
    }
    timed = all(s.times is not None for s in streams.values())
    for t in range(max(lengths.values(), default=0)):
        live = [sid for sid in ids if t < lengths[sid]]
        values = np.stack([streams[sid].values[t] for sid in live])
        ts = np.array([streams[sid].times[t] for sid in live]) if timed else None  # type: ignore[index]
        now = float(ts.max()) if ts is not None else float(t)
        result = pool.update_detailed(live, values, ts, now=now)
        for k, sid in enumerate(live):
            forecasts, status, resets = out[sid]
            forecasts[t] = result.forecasts[k]
            status[t] = result.status[k]
            resets[t] = result.resets[k]
    runs = {}
    for sid, (forecasts, status, resets) in out.items():
        runs[sid] = StreamRun(forecasts, status, resets, _pairs(streams[sid], forecasts, status))
    return runs


def _pairs(series: Series, forecasts: np.ndarray, status: np.ndarray) -> np.ndarray:
    """Rows t whose forecast has an actual at t + 1, about one period later."""
    n = len(series)
    pairs = np.zeros(n, dtype=bool)
    if n < 2:
        return pairs
    target = series.target_values
    ok = (status[:-1] == Status.FORECAST) & np.isfinite(forecasts[:-1]) & np.isfinite(target[1:])
    ok &= np.isfinite(target[:-1])
    if series.times is not None and series.period:
        ok &= np.diff(series.times) <= 1.5 * series.period
    pairs[:-1] = ok
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
    rows = rows[(rows + 1 >= start) & (rows + 1 < stop)]
    if season:
        # seasonal-naive forecasts row t + 1 with row t + 1 - season; score only where it exists,
        # so all three methods see the same pairs.
        back = rows + 1 - season
        rows = rows[back >= 0]
        rows = rows[np.isfinite(target[rows + 1 - season])]
    actual = target[rows + 1]
    err = run.forecasts[rows] - actual
    pers = target[rows] - actual
    seasonal_mae = seasonal_rmse = None
    if season:
        seas = target[rows + 1 - season] - actual
        seasonal_mae, seasonal_rmse = _mae(seas), _rmse(seas)
    return Scores(
        n=int(rows.size),
        mae=_mae(err),
        rmse=_rmse(err),
        persistence_mae=_mae(pers),
        persistence_rmse=_rmse(pers),
        seasonal_mae=seasonal_mae,
        seasonal_rmse=seasonal_rmse,
    )


def evaluate_series(
    model: Model, series: Series, *, start: int = 0, stop: int | None = None, season: int | None = None
) -> Scores:
    """Run ``series`` through a fresh pool from its first row; score the actuals in ``[start, stop)``."""
    run = run_streams(model, {"series": series})["series"]
    return score(series, run, start=start, stop=stop, season=season)


def _mae(err: np.ndarray) -> float:
    return float(np.mean(np.abs(err))) if err.size else float("nan")


def _rmse(err: np.ndarray) -> float:
    return float(np.sqrt(np.mean(err * err))) if err.size else float("nan")
