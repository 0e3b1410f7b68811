"""The CSV/series loader: real files, segments at gaps, and clear errors for bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import edge_gru
from edge_gru.errors import DataError
from edge_gru.pool import Status
from edge_gru.series import Series, read_series

DATA = Path(__file__).parent / "data"


def test_unnamed_first_column_is_the_time_column() -> None:
    s = read_series(DATA / "taylor_electricity_30min.csv", column="demand_MW")
    assert len(s) == 4032
    assert s.period == 1800.0
    assert s.segments == ((0, 4032),)
    assert s.target == "demand_MW"
    assert s.values[0, 0] == 22262.0
    # 2000-06-05 00:00:00, naive, read as UTC
    assert s.times is not None and s.times[0] == 960163200.0


def test_missing_values_split_segments_and_stay_missing() -> None:
    s = read_series(DATA / "beijing_pm25_weather_hourly.csv", column="pm2.5", features=["DEWP", "TEMP"])
    assert s.features == ("pm2.5", "DEWP", "TEMP")
    missing = ~np.isfinite(s.target_values)
    assert missing.sum() == 2067
    # no segment contains a missing row, and every valid row is in exactly one segment
    covered = np.zeros(len(s), dtype=bool)
    for a, b in s.segments:
        assert not missing[a:b].any()
        assert not covered[a:b].any()
        covered[a:b] = True
    assert np.array_equal(covered, ~missing)


def test_time_gap_splits_a_segment(tmp_path: Path) -> None:
    path = tmp_path / "gap.csv"
    rows = [0, 60, 120, 180, 600, 660, 720]
    path.write_text("ts,v\n" + "".join(f"{t},{i}\n" for i, t in enumerate(rows)))
    s = read_series(path, column="v")
    assert s.period == 60.0
    assert s.segments == ((0, 4), (4, 7))


def test_named_time_column_and_no_time_column(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("v,when\n1,2024-01-01T00:00:00Z\n2,2024-01-01T00:01:00Z\n3,2024-01-01T00:02:00Z\n")
    s = read_series(path, column="v", time_column="when")
    assert s.period == 60.0
    only = read_series(path, column="v")  # first column is the target: no time column
    assert only.times is None and only.segments == ((0, 3),)


@pytest.mark.parametrize(
    ("text", "column", "message"),
    [
        ("", "v", "empty"),
        ("t,v\n", "v", "no data rows"),
        ("t,v\n0,1\n1,2\n", "value", "no target column 'value'"),
        ("t,v\n0,1\n1,2\n2,abc\n", "v", "line 4, column 'v': 'abc' is not a number"),
        ("t,v\nmonday,1\n", "v", "line 2, time column 't': 'monday' is neither epoch seconds"),
        ("t,v\n0,\n1,NaN\n", "v", "column 'v' has no numeric values"),
    ],
)
def test_bad_csv_errors_name_file_column_and_line(tmp_path: Path, text: str, column: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(DataError) as err:
        read_series(path, column=column, strict=True)
    assert str(path) in str(err.value)
    assert message in str(err.value)


def test_missing_file() -> None:
    with pytest.raises(DataError, match="no such file"):
        read_series("/nonexistent/x.csv", column="v")


def test_require_reports_the_longest_run() -> None:
    s = Series.from_arrays(np.array([1.0, 2.0, np.nan, 3.0, 4.0, 5.0]))
    s.require(3, "a test")
    with pytest.raises(DataError, match="at most 3 consecutive valid samples; a test needs at least 4"):
        s.require(4, "a test")


# Rows with duplicate, out-of-order and missing-value rows mixed, each a case of the pool's rules.
UNORDERED = [
    (0, "1.0"),
    (60, "2.0"),
    (60, "2.5"),  # duplicate of the last accepted reading
    (120, "3.0"),
    (30, "9.0"),  # out of order
    (180, ""),  # missing: never reaches the pool's state
    (180, "4.0"),  # not a duplicate: the missing row above was never accepted
    (240, "5.0"),
    (240, "5.0"),  # duplicate
    (200, ""),  # missing and out of order
    (300, "6.0"),
]


def test_duplicate_and_out_of_order_rows_are_dropped_as_the_pool_drops_them(tmp_path: Path) -> None:
    path = tmp_path / "unordered.csv"
    path.write_text("t,v\n" + "".join(f"{t},{v}\n" for t, v in UNORDERED))
    s = read_series(path, column="v")
    # the reference: every row, in file order, through a pool with timestamps
    pool = edge_gru.load("models/default", backend="numpy").pool(max_streams=1)
    status = []
    for t, v in UNORDERED:
        value = float(v) if v else float("nan")
        status.append(int(pool.update_detailed(["s"], [value], [float(t)], now=0.0).status[0]))
    pool_dropped = [i + 2 for i, st in enumerate(status) if st in (Status.DUPLICATE, Status.OUT_OF_ORDER)]
    assert [r.line for r in s.dropped_rows if np.isfinite(r.values).all()] == pool_dropped == [4, 6, 10]
    assert s.dropped == {"duplicate": 3, "out_of_order": 2}  # the missing row at 180 goes with the reading at 180
    assert s.times is not None and (np.diff(s.times) > 0).all()
    kept = s.times.tolist()
    assert kept == [0.0, 60.0, 120.0, 180.0, 240.0, 300.0] and np.isfinite(s.target_values).all()
    assert s.dropped_rows[0].before == 2 and s.dropped_rows[0].values == (2.5,)
    summary = s.dropped_summary()
    assert summary is not None and "3 duplicate, 2 out_of_order" in summary and "line 4" in summary


def test_strict_refuses_an_unordered_file_naming_the_line(tmp_path: Path) -> None:
    path = tmp_path / "unordered.csv"
    path.write_text("t,v\n0,1\n60,2\n60,3\n")
    with pytest.raises(DataError, match=r"line 4, time column 't': timestamp 60 does not increase"):
        read_series(path, column="v", strict=True)
    assert read_series(path, column="v").dropped == {"duplicate": 1}


def test_missing_value_tokens_are_one_set_for_every_reader(tmp_path: Path) -> None:
    from edge_gru.series import MISSING
    from sim.replay import load_column

    path = tmp_path / "tokens.csv"
    tokens = sorted(MISSING)
    path.write_text(
        "t,v\n"
        + "".join(f"{i},{tok}\n" for i, tok in enumerate(tokens))
        + f"{len(tokens)},7\n"
        + f"{len(tokens) + 1},8\n"
    )
    s = read_series(path, column="v")
    col = load_column(path, "v")
    assert int(np.isfinite(s.target_values).sum()) == 2
    assert col.values.tolist() == [7.0, 8.0]


def test_strict_also_refuses_a_missing_row_stamped_after_the_next_reading(tmp_path: Path) -> None:
    path = tmp_path / "late-gap.csv"
    path.write_text("t,v\n0,1\n120,\n60,2\n180,3\n")
    with pytest.raises(DataError, match="line 4"):
        read_series(path, column="v", strict=True)
    s = read_series(path, column="v")  # the pool accepts 60 (the missing row never reached it)
    assert s.times is not None and s.times.tolist() == [0.0, 60.0, 180.0]
    assert [(r.line, r.reason) for r in s.dropped_rows] == [(3, "out_of_order")]
