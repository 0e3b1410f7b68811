"""Wire formats: sensor payloads in, forecast payloads out, drop reasons, and the topic <-> stream mapping.

Kept free of MQTT and threads so the simulator, the daemon and the tests parse, encode and
decode exactly the same way. Every rejection is a :class:`~edge_gru.errors.PayloadError`
whose ``reason`` is a :class:`DropReason`, the word the daemon counts and logs. The
contract is written out in ``docs/payloads.md``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np

from edge_gru.errors import PayloadError
from edge_gru.pool import Status
from edge_gru.timestamps import MAX_ABS_EPOCH_S, TimestampError, parse_timestamp

MAX_PAYLOAD_BYTES = 16_384
MAX_EPOCH_S = MAX_ABS_EPOCH_S  # kept for importers; the rule lives in edge_gru.timestamps
STREAM = "{stream}"
TS_FIELDS = ("ts", "timestamp", "time")

_NUMBER_START = frozenset(b"0123456789+-.")


class DropReason(StrEnum):
    """Every reason a reading ends without a published forecast: the keys of the stats topic's ``dropped``.

    A member compares and hashes equal to its word, so counters keyed by either agree.
    """

    # the payload parser (a reading that never reaches the pool)
    EMPTY = "empty"
    TOO_LARGE = "too_large"
    BAD_UTF8 = "bad_utf8"
    BAD_JSON = "bad_json"
    NOT_A_NUMBER = "not_a_number"
    MISSING_FIELD = "missing_field"
    BAD_TS = "bad_ts"
    BAD_PAYLOAD = "bad_payload"  # the parser itself failed (a bug): counted, never raised
    # the pool's per-stream rules (one per Status other than FORECAST)
    WARMUP = "warmup"
    NOT_FINITE = "not_finite"  # also the parser's word for NaN/inf fields
    OUT_OF_ORDER = "out_of_order"
    DUPLICATE = "duplicate"
    STREAM_LIMIT = "stream_limit"
    OUT_OF_RANGE = "out_of_range"
    ID_TOO_LONG = "id_too_long"
    # the daemon around the pool
    UNKNOWN_TOPIC = "unknown_topic"
    QUEUE_FULL = "queue_full"
    INTERNAL_ERROR = "internal_error"
    FORECAST_NOT_FINITE = "forecast_not_finite"
    PUBLISH_FAILED = "publish_failed"

    @property
    def from_payload(self) -> bool:
        """Whether the payload itself was at fault (as opposed to the stream rules, queue or publishing)."""
        return self in _PAYLOAD_REASONS


_PAYLOAD_REASONS = frozenset(
    {
        DropReason.EMPTY,
        DropReason.TOO_LARGE,
        DropReason.BAD_UTF8,
        DropReason.BAD_JSON,
        DropReason.NOT_A_NUMBER,
        DropReason.MISSING_FIELD,
        DropReason.BAD_TS,
        DropReason.BAD_PAYLOAD,
    }
)
#: the drop reason of each pool Status other than FORECAST (a status without one fails here, at import)
STATUS_REASONS: dict[Status, DropReason] = {s: DropReason(s.reason) for s in Status if s is not Status.FORECAST}


def _reject(reason: DropReason | str, detail: str) -> PayloadError:
    word = DropReason(reason)  # a word outside the enum is a bug here, not bad input
    err = PayloadError(f"{word}: {detail}")
    err.reason = word  # type: ignore[attr-defined]
    return err


def _number(value: Any, field: str) -> float:
    """A JSON field as a float: numbers, and numeric strings (some firmwares quote them)."""
    if isinstance(value, bool) or value is None:
        raise _reject(DropReason.NOT_A_NUMBER, f"field {field!r} is {json.dumps(value)}, not a number")
    if isinstance(value, int | float):
        try:
            x = float(value)
        except OverflowError:  # a JSON integer beyond float range
            raise _reject(DropReason.NOT_FINITE, f"field {field!r} is an integer beyond the float range") from None
    elif isinstance(value, str):
        try:
            x = float(value)
        except ValueError:
            raise _reject(DropReason.NOT_A_NUMBER, f"field {field!r} is the string {value[:40]!r}") from None
    else:
        raise _reject(DropReason.NOT_A_NUMBER, f"field {field!r} is a {type(value).__name__}, not a number")
    if not math.isfinite(x):
        raise _reject(DropReason.NOT_FINITE, f"field {field!r} is {x}")
    return x


def _timestamp(value: Any) -> float:
    """Epoch seconds under the one timestamp rule (:mod:`edge_gru.timestamps`); refusals are ``bad_ts``."""
    try:
        return parse_timestamp(value)
    except TimestampError as exc:
        raise _reject("bad_ts", f"ts: {exc}") from None


def parse_payload(
    payload: bytes, features: Sequence[str], *, max_bytes: int = MAX_PAYLOAD_BYTES
) -> tuple[np.ndarray, float | None]:
    """One reading: ``(values float64 (I,), ts or None)``.

    Accepted: a plain number (one-feature models); a JSON object with ``value`` (or the
    feature's name) and an optional ``ts`` (epoch seconds or ISO 8601); a JSON object
    with one field per input feature; a JSON array of I numbers. Extra fields are ignored,
    so sensors that also report battery or RSSI work unchanged.
    """
    n = len(payload)
    if n == 0:
        raise _reject(DropReason.EMPTY, "empty payload")
    if n > max_bytes:
        raise _reject(DropReason.TOO_LARGE, f"{n} bytes, limit {max_bytes}")
    n_features = len(features)
    if payload[0] in _NUMBER_START:  # the fast path for plain numbers
        try:
            x = float(payload)
        except ValueError:
            pass
        else:
            if n_features != 1:
                raise _reject(DropReason.MISSING_FIELD, f"a plain number, but the model needs fields {list(features)}")
            if not math.isfinite(x):
                raise _reject(DropReason.NOT_FINITE, f"value is {x}")
            return np.array([x]), None
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _reject(DropReason.BAD_UTF8, f"not UTF-8 at byte {exc.start}") from None
    stripped = text.strip()
    if not stripped:
        raise _reject(DropReason.EMPTY, "payload is only white space")
    if stripped[0] not in "{[":
        try:
            x = float(stripped)
        except ValueError:
            raise _reject(DropReason.NOT_A_NUMBER, f"{stripped[:40]!r} is neither a number nor JSON") from None
        if n_features != 1:
            raise _reject(DropReason.MISSING_FIELD, f"a plain number, but the model needs fields {list(features)}")
        if not math.isfinite(x):
            raise _reject(DropReason.NOT_FINITE, f"value is {x}")
        return np.array([x]), None
    try:
        data = json.loads(stripped)
    except (ValueError, RecursionError) as exc:
        raise _reject(DropReason.BAD_JSON, str(exc)[:80]) from None
    if isinstance(data, list):
        if len(data) != n_features:
            raise _reject(DropReason.MISSING_FIELD, f"array of {len(data)} values; the model needs {n_features}")
        return np.array([_number(v, f"[{i}]") for i, v in enumerate(data)]), None
    if not isinstance(data, dict):
        raise _reject(DropReason.BAD_JSON, "top level must be a number, an object or an array")
    ts = None
    for key in TS_FIELDS:
        if key in data:
            ts = _timestamp(data[key])
            break
    if n_features == 1:
        key = "value" if "value" in data else features[0]
        if key not in data:
            raise _reject(DropReason.MISSING_FIELD, f"no 'value' field (fields: {', '.join(list(data)[:8])})")
        return np.array([_number(data[key], key)]), ts
    missing = [f for f in features if f not in data]
    if missing:
        raise _reject(DropReason.MISSING_FIELD, f"missing {', '.join(missing)} (the model needs {', '.join(features)})")
    return np.array([_number(data[f], f) for f in features]), ts


class TopicMap:
    """Input topic templates, each with one whole ``{stream}`` segment, e.g. ``sensors/{stream}/value``."""

    def __init__(self, templates: Sequence[str]) -> None:
        if isinstance(templates, str):
            templates = [templates]
        if not templates:
            raise ValueError("at least one input topic template is needed, e.g. 'sensors/{stream}/value'")
        self.templates = tuple(templates)
        # (number of segments, index of the stream segment, the other segments) per template
        self._parsed: list[tuple[int, int, tuple[tuple[int, str], ...]]] = []
        self._filters: list[str] = []
        for template in self.templates:
            share = ""
            match = template
            if template.startswith("$share/"):  # MQTT 5 shared subscription: messages arrive without the prefix
                pieces = template.split("/", 2)
                if len(pieces) < 3 or not pieces[1]:
                    raise ValueError(f"input topic template {template!r}: write '$share/<group>/<topic template>'")
                share, match = f"$share/{pieces[1]}/", pieces[2]
            parts = match.split("/")
            where = [i for i, p in enumerate(parts) if STREAM in p]
            if len(where) != 1 or parts[where[0]] != STREAM or match.count(STREAM) != 1:
                raise ValueError(
                    f"input topic template {template!r} must contain exactly one whole '{{stream}}' segment, "
                    "e.g. 'sensors/{stream}/value'"
                )
            if "+" in template or "#" in template:
                raise ValueError(f"input topic template {template!r} must not contain the wildcards + or #")
            self._filters.append(share + match.replace(STREAM, "+"))
            others = tuple((i, p) for i, p in enumerate(parts) if i != where[0])
            self._parsed.append((len(parts), where[0], others))

    def stream(self, topic: str) -> str | None:
        """The ``{stream}`` segment of ``topic``, or None when no template matches."""
        parts = topic.split("/")
        n = len(parts)
        for count, index, others in self._parsed:
            if count == n and all(parts[i] == p for i, p in others):
                name = parts[index]
                return name or None
        return None

    def subscriptions(self) -> list[str]:
        """MQTT topic filters: each template with ``+`` in place of ``{stream}``."""
        return list(self._filters)

    def __repr__(self) -> str:
        return f"TopicMap({list(self.templates)!r})"


def output_topic(template: str, stream: str) -> str:
    """The forecast topic of ``stream``."""
    return template.replace(STREAM, stream)


def validate_output_template(template: str) -> None:
    if template.count(STREAM) != 1:
        raise ValueError(
            f"output topic template {template!r} must contain '{{stream}}' once, e.g. 'predictions/{{stream}}'"
        )
    if "+" in template or "#" in template:
        raise ValueError(f"output topic template {template!r} must not contain the wildcards + or #")


def encode_forecast(
    *,
    stream: str,
    ts: float,
    forecast_ts: float | None,
    value: float,
    model_id: str,
    backend: str,
    lower: float | None = None,
    upper: float | None = None,
    anomaly: bool | None = None,
) -> bytes:
    """The forecast payload (``docs/payloads.md``): stream, ts, forecast_ts, value, model, backend.

    ``value`` is never null (warm-up readings get no forecast at all); ``forecast_ts`` is
    null only while a stream's sample period is still unknown. With the per-stream
    adaptation on, ``lower``/``upper`` (the prediction interval, null for the first few
    forecasts of a stream) and ``anomaly`` (the reading this forecast follows lay far
    outside its own forecast, or a stuck sensor) are added.
    """
    if not math.isfinite(value):
        raise ValueError(f"forecast value {value} for stream {stream!r} is not finite")
    fts = "null" if forecast_ts is None or not math.isfinite(forecast_ts) else repr(float(forecast_ts))
    # formatted directly (float repr is valid JSON): this runs once per forecast on the worker thread
    text = (
        f'{{"stream":{_json_str(stream)},"ts":{float(ts)!r},"forecast_ts":{fts},"value":{float(value)!r},'
        f'"model":{_json_str(model_id)},"backend":{_json_str(backend)}'
    )
    if anomaly is not None:
        lo = "null" if lower is None or not math.isfinite(lower) else repr(float(lower))
        hi = "null" if upper is None or not math.isfinite(upper) else repr(float(upper))
        text += f',"lower":{lo},"upper":{hi},"anomaly":{"true" if anomaly else "false"}'
    return (text + "}").encode()


def _json_str(text: str) -> str:
    """A JSON string literal; the common plain-ASCII case without ``json.dumps``."""
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return f'"{text}"'
    return json.dumps(text, ensure_ascii=False)


@dataclass(frozen=True)
class Forecast:
    """One decoded forecast payload."""

    stream: str
    ts: float
    forecast_ts: float | None
    value: float
    model: str
    backend: str
    # with the per-stream adaptation on (edge_gru.adaptation); None when the payload has none
    lower: float | None = None
    upper: float | None = None
    anomaly: bool | None = None


def decode_forecast(payload: bytes) -> Forecast:
    """The inverse of :func:`encode_forecast`, for subscribers (the simulator, tests, tools).

    Raises :class:`~edge_gru.errors.PayloadError` naming the field when a payload breaks the contract.
    """
    try:
        doc = json.loads(payload)
    except (ValueError, RecursionError) as exc:
        raise _reject(DropReason.BAD_JSON, f"forecast payload: {str(exc)[:80]}") from None
    if not isinstance(doc, dict):
        raise _reject(DropReason.BAD_JSON, "forecast payload must be a JSON object")
    missing = [k for k in ("stream", "ts", "forecast_ts", "value", "model", "backend") if k not in doc]
    if missing:
        raise _reject(DropReason.MISSING_FIELD, f"forecast payload lacks {', '.join(missing)}")
    for key in ("stream", "model", "backend"):
        if not isinstance(doc[key], str):
            raise _reject(DropReason.BAD_PAYLOAD, f"forecast field {key!r} must be a string")
    fts = doc["forecast_ts"]
    anomaly = doc.get("anomaly")
    if anomaly is not None and not isinstance(anomaly, bool):
        raise _reject(DropReason.BAD_PAYLOAD, "forecast field 'anomaly' must be true or false")
    bounds = {k: None if doc.get(k) is None else _number(doc[k], k) for k in ("lower", "upper")}
    return Forecast(
        stream=doc["stream"],
        ts=_number(doc["ts"], "ts"),
        forecast_ts=None if fts is None else _number(fts, "forecast_ts"),
        value=_number(doc["value"], "value"),
        model=doc["model"],
        backend=doc["backend"],
        anomaly=anomaly,
        **bounds,
    )
