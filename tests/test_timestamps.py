"""The one timestamp rule: the CSV reader, the replay and the daemon's payload parser agree on every case."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest

from edge_gru.daemon.payload import parse_payload
from edge_gru.errors import DataError, PayloadError
from edge_gru.series import read_series
from edge_gru.timestamps import parse_timestamp
from sim.replay import load_column

LATER = 4_000_000_000  # a second row after every case, so the replay has its two readings

# (time text, epoch seconds or None for a refusal), checked against datetime arithmetic done by hand
CASES = [
    ("1732600000", 1732600000.0),
    ("1732600000.25", 1732600000.25),
    ("-5", -5.0),  # before 1970: valid
    ("-371174400", -371174400.0),
    ("1958-03-29", -371174400.0),  # 12 years + 3 leap days + 87 days before 1970-01-01, at midnight UTC
    ("1958-03-29T00:00:00", -371174400.0),  # naive: UTC
    ("2024-11-26T05:46:40", 1732600000.0),  # naive: UTC
    ("2024-11-26 05:46:40", 1732600000.0),
    ("2024-11-26T05:46:40Z", 1732600000.0),
    ("2024-11-26T07:46:40+02:00", 1732600000.0),
    ("2024-11-26T00:46:40-05:00", 1732600000.0),
    ("2024-11-26 05:46:40+00:00", 1732600000.0),
    ("yesterday", None),
    ("nan", None),
    ("inf", None),
    ("1732600000000", None),  # milliseconds
    ("-1e12", None),
    ("2024-13-01", None),
    ("", None),
]


def _csv(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "t.csv"
    path.write_text(f"t,v\n{json.dumps(text)},1\n{LATER},2\n")
    return path


@pytest.mark.parametrize(("text", "expected"), CASES, ids=[c[0] or "empty" for c in CASES])
def test_the_reader_the_replay_and_the_payload_parser_agree(tmp_path: Path, text: str, expected: float | None) -> None:
    path = _csv(tmp_path, text)
    payloads = [json.dumps({"value": 1, "ts": text}).encode()]
    with contextlib.suppress(ValueError):
        payloads.append(json.dumps({"value": 1, "ts": float(text)}).encode())  # the same time as a JSON number
    if expected is None:
        with pytest.raises(DataError, match="line 2, time column 't'"):
            read_series(path, column="v")
        with pytest.raises(DataError, match="line 2"):
            load_column(path, "v")
        for payload in payloads:
            if b"NaN" in payload or b"Infinity" in payload:
                continue  # not JSON a sensor sends; the string form above is checked
            with pytest.raises(PayloadError) as info:
                parse_payload(payload, ("value",))
            assert info.value.reason == "bad_ts"  # type: ignore[attr-defined]
        with pytest.raises(ValueError):
            parse_timestamp(text)
        return
    series = read_series(path, column="v")
    assert series.times is not None and series.times[0] == expected
    assert load_column(path, "v").ts[0] == expected
    for payload in payloads:
        assert parse_payload(payload, ("value",))[1] == expected, payload
    assert parse_timestamp(text) == expected


def test_pre_1970_readings_are_served_not_dropped() -> None:
    """Weekly readings from 1958: every one is accepted by the pool, none is a bad_ts payload."""
    import edge_gru

    pool = edge_gru.load("models/default", backend="numpy").pool(max_streams=1)
    start = parse_timestamp("1958-03-29")
    statuses = []
    for k in range(20):
        _, ts = parse_payload(json.dumps({"value": 315.0 + 0.1 * k, "ts": start + 7 * 86400 * k}).encode(), ("value",))
        assert ts is not None
        statuses.append(int(pool.update_detailed(["co2"], [315.0 + 0.1 * k], [ts], now=0.0).status[0]))
    assert statuses.count(0) == 20 - pool.warmup + 1  # every reading from the warm-up's last gets a forecast
