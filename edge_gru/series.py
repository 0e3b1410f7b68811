"""Sensor series from CSV files, without TensorFlow or pandas, so it also runs on the device.

The one CSV reader of edge-gru: ``train``, ``evaluate``, ``forecast`` and ``simulate
--replay`` all read files here, with one set of missing-value tokens (:data:`MISSING`) and
the one timestamp rule of :mod:`edge_gru.timestamps`.

A :class:`Series` is one stream: timestamps (epoch seconds), the target column and any
extra input features, with missing values kept as NaN. Missing values and time gaps are
never interpolated: they split the series into :attr:`Series.segments`, runs of
consecutive valid samples one period apart, which the trainer uses for windows and for
state resets, and :mod:`edge_gru.evaluation` feeds the rows to the pool exactly as a
sensor would deliver them.

Rows the pool would drop by its timestamp rules are dropped while reading, and listed in
:attr:`Series.dropped_rows`: a reading whose time equals the last accepted reading's is a
``duplicate``, an older one is ``out_of_order`` (``strict=True`` refuses the file instead,
naming the line). Feeding the kept rows to a pool therefore gives exactly the forecasts
that feeding every row of the file would.

>>> import io
>>> csv_text = "time,temp\\n0,20.0\\n60,20.5\\n120,\\n180,21.0\\n240,21.5\\n"
>>> s = read_series(io.StringIO(csv_text), column="temp")
>>> s.period, s.segments
(60.0, ((0, 2), (3, 5)))
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np

from edge_gru.errors import DataError
from edge_gru.timestamps import TimestampError, parse_timestamp

MISSING = frozenset({"", "nan", "na", "n/a", "null", "none", "-", "?"})
SEGMENT_GAP = 1.5  # a step longer than this many periods means samples are missing: a new segment


@dataclass(frozen=True)
class DroppedRow:
    """A file row the pool's rules drop: kept for reports and for ``edge-gru forecast``'s one row per reading."""

    line: int  # line number in the file
    before: int  # index of the first kept row after it (len(series) when it is among the last rows)
    reason: str  # "duplicate" or "out_of_order", the pool's Status names
    time: float
    values: tuple[float, ...]  # the row's values in the series' feature order


@dataclass(frozen=True)
class Series:
    """One sensor stream read from a file; ``values[:, 0]`` is the target."""

    source: str
    features: tuple[str, ...]  # network inputs; features[0] is the target
    values: np.ndarray  # (T, I) float64, NaN where missing
    times: np.ndarray | None  # (T,) epoch seconds, increasing; None when the file has no time column
    period: float | None  # median sampling interval in seconds
    segments: tuple[tuple[int, int], ...]  # [start, stop) row ranges of consecutive valid samples
    dropped_rows: tuple[DroppedRow, ...] = field(default=())  # rows dropped by the pool's timestamp rules

    @property
    def dropped(self) -> dict[str, int]:
        """How many rows were dropped per reason, e.g. ``{"duplicate": 3}``."""
        counts: dict[str, int] = {}
        for row in self.dropped_rows:
            counts[row.reason] = counts.get(row.reason, 0) + 1
        return counts

    def dropped_summary(self) -> str | None:
        """One line for a command's output, or None when no row was dropped."""
        if not self.dropped_rows:
            return None
        parts = ", ".join(f"{n:,} {reason}" for reason, n in sorted(self.dropped.items()))
        return (
            f"{self.source}: dropped {len(self.dropped_rows):,} row(s) as the daemon would ({parts}; "
            f"first at line {self.dropped_rows[0].line}); --strict refuses such a file"
        )

    @property
    def target(self) -> str:
        return self.features[0]

    @property
    def target_values(self) -> np.ndarray:
        return self.values[:, 0]

    def __len__(self) -> int:
        return int(self.values.shape[0])

    @property
    def valid(self) -> np.ndarray:
        """(T,) bool: every feature of the row is present."""
        return np.asarray(np.isfinite(self.values).all(axis=1))

    def require(self, samples: int, why: str) -> None:
        """Raise DataError unless some segment holds at least ``samples`` consecutive valid samples."""
        longest = max((b - a for a, b in self.segments), default=0)
        if longest < samples:
            raise DataError(
                f"{self.source}: column {self.target!r} has at most {longest} consecutive valid samples; "
                f"{why} needs at least {samples} (check the column, or use a shorter window)"
            )

    def slice(self, start: int, stop: int) -> Series:
        """Rows [start, stop) as a series of their own (segments clipped to the range)."""
        segs = tuple((max(a, start) - start, min(b, stop) - start) for a, b in self.segments if b > start and a < stop)
        times = None if self.times is None else self.times[start:stop]
        dropped = tuple(
            dataclasses.replace(r, before=r.before - start) for r in self.dropped_rows if start < r.before <= stop
        )
        return Series(self.source, self.features, self.values[start:stop], times, self.period, segs, dropped)

    def readings(self) -> tuple[np.ndarray, np.ndarray]:
        """(times, target values) of the rows with every feature present: what a sensor would have sent."""
        if self.times is None:
            raise DataError(f"{self.source}: has no time column; name one (e.g. --time-column) to replay it")
        valid = self.valid
        return self.times[valid], self.target_values[valid]

    @classmethod
    def from_arrays(
        cls,
        values: np.ndarray,
        *,
        times: np.ndarray | None = None,
        features: Sequence[str] = ("value",),
        source: str = "<array>",
    ) -> Series:
        """A series from arrays (synthetic profiles, tests); segments are found as for a file."""
        vals = np.asarray(values, dtype=np.float64)
        if vals.ndim == 1:
            vals = vals[:, None]
        if vals.shape[1] != len(features):
            raise DataError(f"{source}: {vals.shape[1]} value column(s) for features {list(features)}")
        ts = None if times is None else np.asarray(times, dtype=np.float64)
        if ts is not None:
            _check_times(ts, source, "time", first_line=1)
        period = _median_period(ts)
        return cls(source, tuple(features), vals, ts, period, _segments(vals, ts, period))


def read_series(
    path: str | os.PathLike[str] | TextIO,
    *,
    column: str,
    time_column: str | None = None,
    features: Sequence[str] = (),
    strict: bool = False,
) -> Series:
    """Read one target ``column`` (plus extra input ``features``) and the time column from a CSV.

    ``time_column`` defaults to the first column (its header may be empty) unless that is the
    target; pass ``"none"`` for a file without one. Times follow :mod:`edge_gru.timestamps`.
    Duplicate and out-of-order rows are dropped as the pool drops them (see the module
    docstring), or refused with ``strict``. Errors name the file, the column and the line.
    """
    if isinstance(path, str | os.PathLike):
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8-sig")
        except FileNotFoundError as exc:
            raise DataError(f"{source}: no such file") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"{source}: cannot read ({exc})") from exc
        rows = list(csv.reader(io.StringIO(text)))
    else:
        source = getattr(path, "name", "<stream>")
        rows = list(csv.reader(path))
    rows = [r for r in rows if any(cell.strip() for cell in r)]
    if not rows:
        raise DataError(f"{source}: the file is empty; expected a header line and one row per sample")
    header = [h.strip() for h in rows[0]]
    body = rows[1:]
    if not body:
        raise DataError(f"{source}: has a header but no data rows")

    def index_of(name: str, role: str) -> int:
        if name not in header:
            shown = ", ".join(repr(h) for h in header)
            raise DataError(f"{source}: no {role} column {name!r}; the header has {shown}")
        return header.index(name)

    target_idx = index_of(column, "target")
    extra = [f for f in features if f and f != column]
    feature_idx = [index_of(f, "feature") for f in extra]
    if time_column is None:
        time_idx: int | None = 0 if target_idx != 0 and 0 not in feature_idx else None
    elif time_column.lower() == "none":
        time_idx = None
    else:
        time_idx = index_of(time_column, "time")
    columns = [target_idx, *feature_idx]
    names = [column, *extra]
    values = np.empty((len(body), len(columns)), dtype=np.float64)
    for line, row in enumerate(body, start=2):
        for j, (col, name) in enumerate(zip(columns, names, strict=True)):
            cell = row[col].strip() if col < len(row) else ""
            values[line - 2, j] = _number(cell, source, name, line)
    times = None
    dropped: tuple[DroppedRow, ...] = ()
    if time_idx is not None:
        tname = header[time_idx] or "(unnamed first column)"
        times = np.array(
            [
                _timestamp(row[time_idx] if time_idx < len(row) else "", source, tname, line)
                for line, row in enumerate(body, start=2)
            ],
            dtype=np.float64,
        )
        keep, dropped = _pool_order(times, values, source, tname, strict=strict)
        if dropped:
            times, values = times[keep], values[keep]
    for j, name in enumerate(names):
        if not np.isfinite(values[:, j]).any():
            raise DataError(f"{source}: column {name!r} has no numeric values")
    period = _median_period(times)
    return Series(source, tuple(names), values, times, period, _segments(values, times, period), dropped)


def _pool_order(
    times: np.ndarray, values: np.ndarray, source: str, column: str, *, strict: bool
) -> tuple[np.ndarray, tuple[DroppedRow, ...]]:
    """Rows to keep (increasing times) and the rows the pool would drop, by the pool's own rule.

    A row with every value present is compared with the last such row kept (the pool's
    ``last_ts``): equal is ``duplicate``, older ``out_of_order``. A row with a missing value
    never reaches the pool's state; it is kept as a gap unless its time is not after the
    last kept row's (then it goes, with the same reason), so the kept times always increase.
    """
    steps = np.diff(times)
    if (steps > 0).all():  # the common case: nothing to drop
        return np.arange(times.shape[0]), ()
    if strict:
        bad = int(np.flatnonzero(steps <= 0)[0]) + 1
        raise DataError(
            f"{source}: line {bad + 2}, time column {column!r}: timestamp {times[bad]:.0f} does not increase "
            f"(previous {times[bad - 1]:.0f}); sort the file and drop duplicate rows, or leave out "
            "--strict to drop them as the daemon does"
        )
    valid = np.isfinite(values).all(axis=1)
    keep: list[int] = []
    dropped: list[tuple[int, str]] = []  # (row index, reason)
    last_valid = -math.inf
    for i in range(times.shape[0]):
        t = float(times[i])
        ref = last_valid if valid[i] else (float(times[keep[-1]]) if keep else -math.inf)
        if t <= ref:
            dropped.append((i, "duplicate" if t == ref else "out_of_order"))
            continue
        while keep and times[keep[-1]] >= t:  # a missing-value row stamped after this reading
            gone = keep.pop()
            dropped.append((gone, "duplicate" if times[gone] == t else "out_of_order"))
        keep.append(i)
        if valid[i]:
            last_valid = t
    if not dropped:
        return np.arange(times.shape[0]), ()
    kept = np.asarray(keep, dtype=np.int64)
    rows = tuple(
        DroppedRow(
            line=i + 2,
            before=int(np.searchsorted(kept, i)),
            reason=reason,
            time=float(times[i]),
            values=tuple(float(v) for v in values[i]),
        )
        for i, reason in sorted(dropped)
    )
    return kept, rows


def _number(cell: str, source: str, column: str, line: int) -> float:
    if cell.lower() in MISSING:
        return math.nan
    try:
        value = float(cell)
    except ValueError:
        raise DataError(
            f"{source}: line {line}, column {column!r}: {cell[:40]!r} is not a number "
            "(leave the cell empty or write NaN for a missing value)"
        ) from None
    return value if math.isfinite(value) else math.nan


def _timestamp(cell: str, source: str, column: str, line: int) -> float:
    try:
        return parse_timestamp(cell)
    except TimestampError as exc:
        raise DataError(
            f"{source}: line {line}, time column {column!r}: {exc} (use --time-column to pick another column, "
            "or 'none')"
        ) from None


def _check_times(times: np.ndarray, source: str, column: str, *, first_line: int) -> None:
    if not np.isfinite(times).all():
        bad = int(np.flatnonzero(~np.isfinite(times))[0])
        raise DataError(f"{source}: line {bad + first_line}, time column {column!r} is not a finite number")
    with np.errstate(over="ignore", invalid="ignore"):
        steps = np.diff(times)
    if (steps <= 0).any():
        bad = int(np.flatnonzero(steps <= 0)[0]) + 1
        raise DataError(
            f"{source}: line {bad + first_line}, time column {column!r}: timestamp {times[bad]:.0f} does not "
            f"increase (previous {times[bad - 1]:.0f}); sort the file and drop duplicate rows"
        )


def _median_period(times: np.ndarray | None) -> float | None:
    if times is None or times.shape[0] < 2:
        return None
    with np.errstate(over="ignore", invalid="ignore"):
        return float(np.median(np.diff(times)))


def _segments(values: np.ndarray, times: np.ndarray | None, period: float | None) -> tuple[tuple[int, int], ...]:
    """Runs of valid rows, broken by a missing value or a step longer than SEGMENT_GAP periods."""
    valid = np.isfinite(values).all(axis=1)
    breaks = ~valid
    starts_new = np.zeros(values.shape[0], dtype=bool)
    if times is not None and period:
        with np.errstate(over="ignore", invalid="ignore"):
            starts_new[1:] = np.diff(times) > SEGMENT_GAP * period
    segments = []
    start = None
    for i in range(values.shape[0]):
        if breaks[i]:
            if start is not None:
                segments.append((start, i))
            start = None
            continue
        if start is None:
            start = i
        elif starts_new[i]:
            segments.append((start, i))
            start = i
    if start is not None:
        segments.append((start, values.shape[0]))
    return tuple(segments)
