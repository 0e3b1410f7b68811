"""Fuzzing the CSV loader (``edge_gru.series.read_series``): a correct Series or a DataError naming the place.

Random tables are written with the csv module (quoted headers, unicode, commas in names,
missing cells, epoch or ISO 8601 times) and must read back exactly; random text and bytes
must give a Series or a :class:`DataError`, never another exception.
"""

from __future__ import annotations

import csv
import io
import math
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from edge_gru.errors import DataError
from edge_gru.series import MISSING, read_series

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

name = st.text(st.characters(codec="utf-8", exclude_characters="\x00\r\n"), min_size=1, max_size=12).filter(
    lambda s: s.strip() == s and s.strip().lower() not in ("none",) and s != "\ufeff"
)
cell_value = st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.none())


def write_csv(header: list[str], rows: list[list[str]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


@FUZZ
@given(
    names=st.lists(name, min_size=1, max_size=3, unique=True),
    data=st.data(),
    iso=st.booleans(),
    start=st.integers(0, 2_000_000_000),
)
def test_a_written_table_reads_back_exactly(
    tmp_path: Path, names: list[str], data: st.DataObject, iso: bool, start: int
) -> None:
    n = data.draw(st.integers(1, 30))
    steps = data.draw(st.lists(st.integers(1, 7200), min_size=n, max_size=n))
    times = start + np.cumsum(steps) - steps[0]
    values = [[data.draw(cell_value) for _ in names] for _ in range(n)]
    if all(v[0] is None for v in values):
        values[0][0] = 1.0
    for j in range(1, len(names)):
        if all(v[j] is None for v in values):
            values[0][j] = 2.0
    header = ["time", *names]
    if "time" in names:
        return
    rows = []
    for t, vs in zip(times.tolist(), values, strict=True):
        stamp = datetime.fromtimestamp(t, UTC).isoformat() if iso else str(t)
        rows.append([stamp, *["" if v is None else repr(v) for v in vs]])
    path = tmp_path / "data.csv"
    path.write_text(write_csv(header, rows), encoding="utf-8")
    series = read_series(path, column=names[0], features=names[1:])
    assert series.features == tuple(names)
    want = np.array([[np.nan if v is None else v for v in vs] for vs in values])
    np.testing.assert_array_equal(series.values, want)
    assert series.times is not None
    np.testing.assert_array_equal(series.times, times.astype(np.float64))
    # segments: runs of valid rows, disjoint and increasing, never covering a missing value
    covered = np.zeros(n, dtype=bool)
    for a, b in series.segments:
        assert 0 <= a < b <= n and not covered[a:b].any()
        covered[a:b] = True
    assert not (covered & ~np.isfinite(want).all(axis=1)).any()


@FUZZ
@given(text=st.text(max_size=300), column=st.sampled_from(["value", "temp", "time", "a"]))
@example(text="time,value\n", column="value")
@example(text="time,value\n0,1\n0,2\n", column="value")
@example(text="time,value\n1,1\n0,2\n", column="value")
@example(text="time,value\nnan,1\n", column="value")
@example(text="time,value\n2026-01-01,1\n2026-01-01T00:00:00+05:00,2\n", column="value")
@example(text="time,value\n0,1e999\n1,2\n", column="value")
@example(text="time,value\n0,1\n1,x\n", column="value")
@example(text="value\n1\n2\n", column="value")
@example(text='"va""lue",time\n1,0\n', column='va"lue')
@example(text="time,value\n0\n1,2\n", column="value")
@example(text="\ufefftime,value\n0,1\n", column="value")
@example(text="time,value\n9" + "9" * 400 + ",1\n", column="value")
@example(text="time,value\n-1e308,1\n1e308,2\n", column="value")
def test_any_text_reads_or_fails_with_a_data_error(tmp_path: Path, text: str, column: str) -> None:
    path = tmp_path / "data.csv"
    path.write_text(text, encoding="utf-8")
    try:
        series = read_series(path, column=column)
    except DataError as exc:
        assert str(path) in str(exc), str(exc)
        return
    assert series.values.shape[0] == len(series)
    assert np.isfinite(series.values[:, 0]).any()
    if series.times is not None:
        assert np.isfinite(series.times).all() and (np.diff(series.times) > 0).all()


@FUZZ
@given(raw=st.binary(max_size=200))
@example(raw=b"\xff\xfetime,value\n")
@example(raw=b"time,value\n0,1\x00\n")
@example(raw=b'time,value\n0,"1\n')
def test_any_bytes_read_or_fail_with_a_data_error(tmp_path: Path, raw: bytes) -> None:
    path = tmp_path / "data.csv"
    path.write_bytes(raw)
    try:
        read_series(path, column="value")
    except DataError as exc:
        assert str(path) in str(exc)


@pytest.mark.parametrize("missing", sorted(MISSING))
def test_every_missing_marker_is_a_gap_not_an_error(tmp_path: Path, missing: str) -> None:
    path = tmp_path / "m.csv"
    path.write_text(f"time,value\n0,1\n60,{missing}\n120,3\n")
    series = read_series(path, column="value")
    assert math.isnan(series.values[1, 0]) and series.segments == ((0, 1), (2, 3))


def test_a_bad_cell_error_names_file_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("time,temp\n0,20\n60,21\n120,warm\n")
    with pytest.raises(DataError) as err:
        read_series(path, column="temp")
    message = str(err.value)
    assert str(path) in message and "line 4" in message and "'temp'" in message and "warm" in message
