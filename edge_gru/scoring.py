"""The one scorer: one-step forecasts against actuals and persistence, on one pairing rule.

``edge-gru evaluate`` (:mod:`edge_gru.evaluation`), the trainer's tables, the simulator's
report and the benchmarks score here. The pairing rule: a forecast made at an accepted
reading is scored against the stream's **next accepted reading** when that reading is
the next sample, i.e. it arrived at most :data:`PAIR_GAP` sample periods later (after a
dropout, a gap or a clock jump the forecast's target never arrived). Persistence (the
forecast "the next reading equals this one") is scored on exactly the same pairs, so
``mae / persistence_mae`` is a fair skill score (below 1: the model beats persistence).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

PAIR_GAP = 1.5  # a forecast's actual is the next accepted reading at most this many periods later


def next_reading_pairs(ts: np.ndarray, has_forecast: np.ndarray, period: float) -> np.ndarray:
    """Indices ``k`` of accepted readings (times ``ts``, in order) whose forecast is scored against reading k + 1."""
    return step_pairs(ts, has_forecast, period, 1)


def step_pairs(ts: np.ndarray, has_forecast: np.ndarray, period: float, step: int) -> np.ndarray:
    """Indices ``j`` of accepted readings whose step-``step`` forecast is scored against reading ``j + step``.

    The same rule as :func:`next_reading_pairs` (``step`` 1), stretched: reading ``j + step``
    must have arrived at most ``step + PAIR_GAP - 1`` periods after reading ``j``.
    """
    if ts.shape[0] <= step:
        return np.zeros(0, dtype=np.int64)
    with np.errstate(over="ignore", invalid="ignore"):
        near = (ts[step:] - ts[:-step]) <= (step + PAIR_GAP - 1) * period
    return np.flatnonzero(has_forecast[:-step] & near)


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
    coverage: float | None = None  # share of actuals inside the forecast's interval (adaptation on)
    interval_width: float | None = None  # mean upper - lower
    anomalies: int | None = None  # readings flagged as anomalies
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, model_err: np.ndarray, persistence_err: np.ndarray, seasonal_err: np.ndarray | None = None) -> Scores:
        """Scores from per-pair errors (forecast - actual) of the model, persistence and seasonal-naive."""
        seasonal = (None, None) if seasonal_err is None else (_mae(seasonal_err), _rmse(seasonal_err))
        return cls(
            n=int(model_err.size),
            mae=_mae(model_err),
            rmse=_rmse(model_err),
            persistence_mae=_mae(persistence_err),
            persistence_rmse=_rmse(persistence_err),
            seasonal_mae=seasonal[0],
            seasonal_rmse=seasonal[1],
        )

    @property
    def ratio(self) -> float:
        """Model MAE over persistence MAE: below 1 means the model beats persistence."""
        return self.mae / self.persistence_mae if self.persistence_mae > 0 else float("nan")

    def to_json(self) -> dict[str, Any]:
        data = {k: v for k, v in asdict(self).items() if k != "extra" and v is not None}
        data["ratio"] = self.ratio
        data.update(self.extra)
        return data

    def metrics(self) -> dict[str, Any]:
        """The simulator report's form: None rather than NaN where there is nothing to score."""
        if not self.n:
            keys = ("mae", "rmse", "persistence_mae", "persistence_rmse", "mae_ratio")
            return {"n": 0, **dict.fromkeys(keys)}
        return {
            "n": self.n,
            "mae": self.mae,
            "rmse": self.rmse,
            "persistence_mae": self.persistence_mae,
            "persistence_rmse": self.persistence_rmse,
            "mae_ratio": self.mae / self.persistence_mae if self.persistence_mae > 0 else None,
        }


def _mae(err: np.ndarray) -> float:
    return float(np.mean(np.abs(err))) if err.size else float("nan")


def _rmse(err: np.ndarray) -> float:
    return float(np.sqrt(np.mean(err * err))) if err.size else float("nan")
