"""Real sensor series from CSV files, replayed as streams with the file's own timestamps.

The file is read by :func:`edge_gru.series.read_series`, the reader ``evaluate`` and
``train`` use, so a replay sees the same rows, the same missing-value tokens, the same
timestamp rule and the same pool-rule drops (duplicate, out-of-order) as they do. Rows
with a missing value are readings the sensor never sent and are not sent, as a real gap
would be; the pool would drop them unchanged, so forecasts equal ``evaluate``'s.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_gru.errors import DataError
from edge_gru.series import Series, read_series


@dataclass(frozen=True)
class ReplayColumn:
    """The readings of one CSV column to send, and the series they came from (for its period and drops)."""

    path: Path
    column: str
    series: Series
    ts: np.ndarray  # (T,) float64, strictly increasing
    values: np.ndarray  # (T,) float64, finite


def load_column(
    path: str | os.PathLike[str],
    column: str,
    *,
    time_column: str | None = None,
    limit: int | None = None,
    strict: bool = False,
) -> ReplayColumn:
    """The present readings of ``column`` (at most ``limit``), timed by ``time_column`` (default: the first column).

    Raises :class:`edge_gru.DataError` naming the file, the column and the line for a missing
    column, a non-numeric cell or a time the timestamp rule refuses.
    """
    where = Path(path)
    series = read_series(where, column=column, time_column=time_column, strict=strict)
    if series.times is None:
        raise DataError(f"{where}: column {column!r} is the first column; name the time column (--time-column)")
    if limit is not None:
        valid_rows = np.flatnonzero(series.valid)
        if valid_rows.size > limit:
            series = series.slice(0, int(valid_rows[limit - 1]) + 1)
    ts, values = series.readings()
    if values.size < 2:
        raise DataError(f"{where}: column {column!r} has {values.size} numeric readings; need at least 2")
    return ReplayColumn(where, column, series, ts, values)
