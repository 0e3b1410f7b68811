"""Real sensor series from CSV files: a timestamp column and numeric columns.

The simulator replays one column of such a file as a stream, with the file's own
timestamps, so a user sees the daemon's forecasts on *their* data. Empty cells are
readings the sensor never sent and are skipped, as a real gap would be.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from edge_gru.errors import DataError


@dataclass(frozen=True)
class CsvColumn:
    """One column of a CSV with its timestamps (epoch seconds, UTC when the file gives no zone)."""

    path: Path
    column: str
    ts: np.ndarray  # (T,) float64, strictly increasing
    values: np.ndarray  # (T,) float64, finite


def _parse_time(text: str, where: str) -> float:
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise DataError(f"{where}: {text!r} is neither epoch seconds nor an ISO 8601 time") from exc
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp()


def load_column(
    path: str | os.PathLike[str], column: str, *, time_column: str | None = None, limit: int | None = None
) -> CsvColumn:
    """Read ``column`` of the CSV at ``path``; the timestamps come from ``time_column`` (default: the first column).

    Raises :class:`edge_gru.DataError` naming the file, the column and the line for a missing
    column, a non-numeric cell or timestamps that go backwards.
    """
    where = Path(path)
    try:
        fh = open(where, newline="", encoding="utf-8")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise DataError(f"{where}: cannot open ({exc.strerror})") from exc
    with fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if not header:
            raise DataError(f"{where}: empty file; expected a header row")
        header = [h.strip() for h in header]
        if column not in header:
            raise DataError(f"{where}: no column {column!r}; columns are {', '.join(repr(h) for h in header)}")
        t_idx = 0 if time_column is None else header.index(time_column) if time_column in header else -1
        if t_idx < 0:
            raise DataError(f"{where}: no time column {time_column!r}; columns are {', '.join(header)}")
        v_idx = header.index(column)
        if v_idx == t_idx:
            raise DataError(f"{where}: column {column!r} is the time column; name a value column")
        ts: list[float] = []
        values: list[float] = []
        for line_no, row in enumerate(reader, start=2):
            if not row or len(row) <= max(t_idx, v_idx):
                continue
            cell = row[v_idx].strip()
            if cell == "" or cell.lower() in ("na", "nan", "null"):
                continue
            try:
                value = float(cell)
            except ValueError as exc:
                raise DataError(f"{where}:{line_no}: column {column!r} holds {cell!r}, not a number") from exc
            if not math.isfinite(value):
                continue
            t = _parse_time(row[t_idx], f"{where}:{line_no}")
            if ts and t <= ts[-1]:
                raise DataError(
                    f"{where}:{line_no}: timestamps must increase ({row[t_idx]!r} is not after the row before)"
                )
            ts.append(t)
            values.append(value)
            if limit is not None and len(values) >= limit:
                break
    if len(values) < 2:
        raise DataError(f"{where}: column {column!r} has {len(values)} numeric readings; need at least 2")
    return CsvColumn(where, column, np.asarray(ts), np.asarray(values))
