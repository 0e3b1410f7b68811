"""The one timestamp rule of edge-gru: what a reading's time may be, wherever it comes from.

CSV files (``train``, ``evaluate``, ``forecast``, ``simulate --replay``) and MQTT payloads
(the daemon) go through :func:`parse_timestamp`, so a reading is accepted or refused, and
placed in time, the same way everywhere:

- a number (or a numeric string) is epoch seconds, UTC. It may be negative: readings
  before 1970 (e.g. weekly CO2 since 1958) are valid. Its magnitude must stay below
  :data:`MAX_ABS_EPOCH_S` (about the year 5138), beyond which it is almost always
  milliseconds;
- a string that is not a number is ISO 8601 (``2026-01-01T12:00:00+02:00``,
  ``2026-01-01 10:00:00Z``, ``2026-01-01``). A time without an offset is **UTC**
  (sensor logs and exports rarely carry one, and the local zone of the machine that
  happens to read the file is no better a guess);
- anything else (booleans, ``nan``, ``inf``, empty text, other words) is refused with a
  :class:`TimestampError` saying what was expected.

>>> parse_timestamp("1958-03-29")
-371174400.0
>>> parse_timestamp("2026-01-01T02:00:00+02:00") == parse_timestamp(1767225600)
True
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

MAX_ABS_EPOCH_S = 1e11  # ~ year 5138; larger magnitudes are almost always milliseconds


class TimestampError(ValueError):
    """A value that is not a timestamp under the rule above; the message says why, without a location."""


def parse_timestamp(value: object) -> float:
    """Epoch seconds (UTC) of ``value``: a number, a numeric string or an ISO 8601 string."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        shown = "null" if value is None else repr(value)[:40]
        raise TimestampError(f"{shown} is not a time; expected epoch seconds or an ISO 8601 string")
    if isinstance(value, str):
        text = value.strip()
        if not text:
            raise TimestampError("the time is empty; expected epoch seconds or an ISO 8601 string")
        try:
            ts = float(text)
        except ValueError:
            ts = _iso(text)
    else:
        try:
            ts = float(value)
        except OverflowError:  # an integer beyond the float range
            raise TimestampError("the time is an integer beyond the float range; expected epoch seconds") from None
    if not math.isfinite(ts):
        raise TimestampError(f"the time {ts} is not finite; expected epoch seconds or an ISO 8601 string")
    if abs(ts) > MAX_ABS_EPOCH_S:
        raise TimestampError(f"the time {ts:.0f} looks like milliseconds; expected epoch seconds")
    return ts


def _iso(text: str) -> float:
    try:
        stamp = datetime.fromisoformat(text[:-1] + "+00:00" if text[-1] in "zZ" else text)
    except ValueError:
        raise TimestampError(
            f"{text[:40]!r} is neither epoch seconds nor an ISO 8601 time (e.g. 2026-01-01T12:00:00Z)"
        ) from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)  # the documented rule: naive times are UTC
    return stamp.timestamp()
