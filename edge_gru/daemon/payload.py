"""Wire formats: sensor payloads in, forecast payloads out, drop reasons, and the topic <-> stream mapping.

Kept free of MQTT and threads so the simulator, the daemon and the tests parse, encode and
decode exactly the same way. Every rejection is a :class:`~edge_gru.errors.PayloadError`
whose ``reason`` is a :class:`DropReason`, the word the daemon counts and logs. The
contract is written out in ``docs/payloads.md``.
"""

from __future__ import annotations

import json
import json.scanner
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
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
# json.loads without its two whitespace regex matches and Python frames: the payload is stripped first
_scan_json = json.scanner.make_scanner(json.JSONDecoder())  # type: ignore[arg-type]
#: one reading's values, in the model's feature order (a tuple: no array per reading on the hot path)
Values = tuple[float, ...]
#: SenML (RFC 8428) resolved names: letters, digits and - : . / _ , starting with a letter or digit
SENML_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-:./_]*\Z")
SENML_VERSION = 10  # the highest base version (bver) understood
SENML_RELATIVE_S = 2.0**28  # RFC 8428: resolved times below 2**28 are relative to now


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
    BAD_PACK = "bad_pack"  # a pack (SenML or array of readings) broken as a whole: all its records
    BAD_NAME = "bad_name"  # a SenML record whose resolved name (bn + n) is empty or not RFC 8428 characters
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
        DropReason.BAD_PACK,
        DropReason.BAD_NAME,
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
    if type(value) is float and math.isfinite(value):  # the common case, first
        return value
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
    if type(value) is float and -MAX_ABS_EPOCH_S <= value <= MAX_ABS_EPOCH_S:  # the rule's common case, inline
        return value
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
    values, ts = parse_values(payload, features, max_bytes=max_bytes)
    return np.array(values), ts


def parse_values(
    payload: bytes, features: Sequence[str], *, max_bytes: int = MAX_PAYLOAD_BYTES
) -> tuple[Values, float | None]:
    """:func:`parse_payload` as a tuple of floats: what the daemon queues (no array per reading)."""
    n = len(payload)
    if n == 0:
        raise _reject(DropReason.EMPTY, "empty payload")
    if n > max_bytes:
        raise _reject(DropReason.TOO_LARGE, f"{n} bytes, limit {max_bytes}")
    if payload[0] in _NUMBER_START:  # the fast path for plain numbers
        try:
            x = float(payload)
        except ValueError:
            pass
        else:
            return _plain_number(x, features), None
    data = _json_document(payload)
    if isinstance(data, float):  # a bare number with white space around it, or a JSON number
        return _plain_number(data, features), None
    return _reading(data, features)


def _plain_number(x: float, features: Sequence[str]) -> Values:
    if len(features) != 1:
        raise _reject(DropReason.MISSING_FIELD, f"a plain number, but the model needs fields {list(features)}")
    if not math.isfinite(x):
        raise _reject(DropReason.NOT_FINITE, f"value is {x}")
    return (x,)


def _json_document(payload: bytes) -> Any:
    """The JSON value of a payload (a float for a plain number), or the payload's drop reason."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _reject(DropReason.BAD_UTF8, f"not UTF-8 at byte {exc.start}") from None
    stripped = text.strip()
    if not stripped:
        raise _reject(DropReason.EMPTY, "payload is only white space")
    if stripped[0] not in "{[":
        try:
            return float(stripped)
        except ValueError:
            raise _reject(DropReason.NOT_A_NUMBER, f"{stripped[:40]!r} is neither a number nor JSON") from None
    try:
        data, end = _scan_json(stripped, 0)
    except StopIteration:  # the scanner's word for "no value here"
        raise _reject(DropReason.BAD_JSON, "Expecting value") from None
    except (ValueError, RecursionError) as exc:
        raise _reject(DropReason.BAD_JSON, str(exc)[:80]) from None
    if end != len(stripped):
        raise _reject(DropReason.BAD_JSON, f"Extra data: line 1 column {end + 1} (char {end})")
    return data


def _reading(data: Any, features: Sequence[str]) -> tuple[Values, float | None]:
    """One reading from a parsed JSON value: an object, an array of the features, or a number."""
    n_features = len(features)
    if isinstance(data, list):
        if len(data) != n_features:
            raise _reject(DropReason.MISSING_FIELD, f"array of {len(data)} values; the model needs {n_features}")
        return tuple([_number(v, f"[{i}]") for i, v in enumerate(data)]), None
    if not isinstance(data, dict):
        if isinstance(data, int | float) and not isinstance(data, bool):  # an element of an array pack
            try:
                x = float(data)
            except OverflowError:  # an integer beyond the float range, as float() reads it from text
                x = math.inf
            return _plain_number(x, features), None
        raise _reject(DropReason.NOT_A_NUMBER, f"{json.dumps(data)[:40]} is neither a number nor a reading")
    ts = None
    for key in TS_FIELDS:
        if key in data:
            ts = _timestamp(data[key])
            break
    if n_features == 1:
        key = "value" if "value" in data else features[0]
        if key not in data:
            raise _reject(DropReason.MISSING_FIELD, f"no 'value' field (fields: {', '.join(list(data)[:8])})")
        return (_number(data[key], key),), ts
    missing = [f for f in features if f not in data]
    if missing:
        raise _reject(DropReason.MISSING_FIELD, f"missing {', '.join(missing)} (the model needs {', '.join(features)})")
    return tuple([_number(data[f], f) for f in features]), ts


@dataclass(slots=True)
class Pack:
    """The readings of one message that carries several, and what became of the rest.

    ``readings`` are ``(stream, values, ts or None)`` in message order; ``drops`` counts
    every other record by reason, so ``len(readings) + sum(drops.values())`` is the number
    of readings the message stood for (1 when it could not be read at all).
    """

    readings: list[tuple[str, Values, float | None]] = field(default_factory=list)
    drops: dict[DropReason, int] = field(default_factory=dict)
    detail: str | None = None  # the first drop's message, for the (rate-limited) warning

    @property
    def count(self) -> int:
        return len(self.readings) + sum(self.drops.values())

    def drop(self, err: PayloadError, n: int = 1) -> None:
        reason = getattr(err, "reason", DropReason.BAD_PAYLOAD)
        self.drops[reason] = self.drops.get(reason, 0) + n
        if self.detail is None:
            self.detail = str(err)


def _pack_document(payload: bytes, max_bytes: int, pack: Pack) -> list[Any] | None:
    """The JSON array of a pack, or None after counting the whole message as one dropped reading."""
    try:
        if not payload:
            raise _reject(DropReason.EMPTY, "empty payload")
        if len(payload) > max_bytes:
            raise _reject(DropReason.TOO_LARGE, f"{len(payload)} bytes, limit {max_bytes}")
        data = _json_document(payload)
        if not isinstance(data, list):
            raise _reject(DropReason.BAD_PACK, "a pack must be a JSON array of records")
        if not data:
            raise _reject(DropReason.EMPTY, "a pack with no records")
    except PayloadError as exc:
        pack.drop(exc)
        return None
    return data


def parse_pack(payload: bytes, stream: str, features: Sequence[str], *, max_bytes: int = MAX_PAYLOAD_BYTES) -> Pack:
    """A JSON array of readings of one stream (``[{"value": 21.5, "ts": ...}, ...]``), each as one message.

    Every element is read exactly as :func:`parse_payload` reads a message holding that
    JSON value (an object, a plain number, or an array of the features); a bad element is
    dropped with its own reason and the others go on.
    """
    pack = Pack()
    data = _pack_document(payload, max_bytes, pack)
    if data is None:
        return pack
    append = pack.readings.append
    for element in data:
        try:
            values, ts = _reading(element, features)
        except PayloadError as exc:
            pack.drop(exc)
        else:
            append((stream, values, ts))
    return pack


def parse_senml(
    payload: bytes, features: Sequence[str], *, received: float, max_bytes: int = MAX_PAYLOAD_BYTES
) -> Pack:
    """A SenML (RFC 8428) JSON pack: one reading per record with a numeric ``v``.

    The stream is the resolved name ``bn + n``, the value ``bv + v``, the time ``bt + t``
    (relative to ``received`` when below 2**28, as the RFC says; no time at all is a
    reading without ``ts``). Base fields hold for their record and the ones after it. A
    pack that cannot be read as a whole (not an array, a record not an object, a base
    field of the wrong type, ``bver`` above 10, a field ending in ``_`` that must be
    understood) drops every record as ``bad_pack``. Records with only base fields are not
    readings. One-input models only: a multi-input model drops each record as ``missing_field``.
    """
    pack = Pack()
    data = _pack_document(payload, max_bytes, pack)
    if data is None:
        return pack
    try:
        _check_senml_pack(data)
    except PayloadError as exc:
        pack.drop(exc, len(data))
        return pack
    if len(features) != 1:
        pack.drop(
            _reject(DropReason.MISSING_FIELD, f"SenML carries one value per record; the model needs {list(features)}"),
            sum(1 for r in data if not _base_only(r)),
        )
        return pack
    bn, bt, bv = "", 0.0, 0.0
    append = pack.readings.append
    for record in data:
        if "bn" in record:
            bn = record["bn"]
        if "bt" in record:
            bt = float(record["bt"])
        if "bv" in record:
            bv = float(record["bv"])
        if _base_only(record):
            continue
        try:
            name = bn + record.get("n", "")
            if not SENML_NAME.match(name):
                raise _reject(DropReason.BAD_NAME, f"SenML name {name[:64]!r}: use letters, digits and - : . / _")
            v = record.get("v")
            if v is None:
                shown = next((k for k in ("vs", "vb", "vd", "s") if k in record), None)
                if shown is not None:
                    raise _reject(DropReason.NOT_A_NUMBER, f"SenML record {name[:64]!r} has {shown!r}, not 'v'")
                raise _reject(DropReason.MISSING_FIELD, f"SenML record {name[:64]!r} has no 'v'")
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise _reject(DropReason.NOT_A_NUMBER, f"SenML 'v' of {name[:64]!r} is {json.dumps(v)[:40]}")
            x = _number(v, "v") + bv if bv else _number(v, "v")
            if not math.isfinite(x):
                raise _reject(DropReason.NOT_FINITE, f"SenML value of {name[:64]!r} is {x}")
            ts: float | None = None
            t = record.get("t")
            if t is not None or bt:
                if t is not None and (isinstance(t, bool) or not isinstance(t, int | float)):
                    raise _reject(DropReason.BAD_TS, f"SenML 't' of {name[:64]!r} is {json.dumps(t)[:40]}")
                resolved = bt + (float(t) if t is not None else 0.0)
                ts = _timestamp(resolved + received if resolved < SENML_RELATIVE_S else resolved)
            append((name, (x,), ts))
        except PayloadError as exc:
            pack.drop(exc)
        except OverflowError:  # an integer beyond the float range
            pack.drop(_reject(DropReason.NOT_FINITE, "a SenML number beyond the float range"))
    return pack


def _finite(value: float) -> bool:
    try:
        return math.isfinite(float(value))
    except OverflowError:  # an integer beyond the float range
        return False


_SENML_BASE = frozenset({"bn", "bt", "bu", "bv", "bs", "bver"})


def _base_only(record: dict[str, Any]) -> bool:
    """A record with base fields only (no name, value or time): it sets context and is no reading."""
    if "n" in record or "v" in record:  # the common record, decided in one or two lookups
        return False
    return bool(record) and record.keys() <= _SENML_BASE


def _check_senml_pack(data: list[Any]) -> None:
    """What makes a whole SenML pack unreadable (RFC 8428 sections 4.1-4.4)."""
    for k, record in enumerate(data):
        if not isinstance(record, dict):
            raise _reject(DropReason.BAD_PACK, f"SenML record {k} is not an object")
        for key in record:
            if key.endswith("_"):
                raise _reject(DropReason.BAD_PACK, f"SenML record {k}: field {key[:20]!r} must be understood")
        if "bn" in record and not isinstance(record["bn"], str):
            raise _reject(DropReason.BAD_PACK, f"SenML record {k}: 'bn' must be a string")
        if "n" in record and not isinstance(record["n"], str):
            raise _reject(DropReason.BAD_PACK, f"SenML record {k}: 'n' must be a string")
        for key in ("bt", "bv"):
            if key in record:
                value = record[key]
                if isinstance(value, bool) or not isinstance(value, int | float) or not _finite(value):
                    raise _reject(DropReason.BAD_PACK, f"SenML record {k}: {key!r} must be a finite number")
        if "bver" in record:
            version = record["bver"]
            if isinstance(version, bool) or not isinstance(version, int) or version > SENML_VERSION:
                raise _reject(DropReason.BAD_PACK, f"SenML record {k}: bver {json.dumps(version)[:20]} not supported")


_CACHE_SIZE = 16_384  # default bound of the per-topic and per-stream caches


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


class Route(IntEnum):
    """What a message on an input topic carries."""

    READING = 0  # one reading of the topic's stream (``[streams] input``)
    PACK = 1  # a JSON array of readings of the topic's stream (``[streams] pack_input``)
    SENML = 2  # a SenML pack; streams from the records' names (``[streams] senml_input``)


class InputTopics:
    """The daemon's input topics: ``input`` and ``pack_input`` templates, ``senml_input`` filters.

    A topic is looked up in that order, so a topic matching several is read by the first.
    SenML filters are MQTT topic filters (``+`` and a final ``#`` allowed, no ``{stream}``):
    the stream ids come from the records.
    """

    def __init__(
        self,
        input: Sequence[str],
        pack_input: Sequence[str] = (),
        senml_input: Sequence[str] = (),
        *,
        cache_size: int = _CACHE_SIZE,
    ) -> None:
        self.readings = TopicMap(input)
        self.packs = TopicMap(pack_input) if pack_input else None
        self.senml: tuple[tuple[str, tuple[str, ...]], ...] = tuple((f, _senml_filter(f)) for f in senml_input)
        self._cache: dict[str, tuple[Route, str | None]] = {}  # topic -> route: one dict lookup per message
        self.cache_size = cache_size  # bounded: random topics from a noisy sender only cost a refill

    def route(self, topic: str) -> tuple[Route, str | None]:
        """``(what the message carries, the topic's stream or None)``; ``(READING, None)`` is an unknown topic."""
        hit = self._cache.get(topic)
        if hit is not None:
            return hit
        if len(self._cache) >= self.cache_size:
            self._cache.clear()
        found: tuple[Route, str | None] = (Route.READING, None)
        stream = self.readings.stream(topic)
        if stream is not None:
            found = (Route.READING, stream)
        elif self.packs is not None and (stream := self.packs.stream(topic)) is not None:
            found = (Route.PACK, stream)
        elif self.senml and any(_filter_matches(parts, topic) for _, parts in self.senml):
            found = (Route.SENML, None)
        self._cache[topic] = found
        return found

    def subscriptions(self) -> list[str]:
        subs = self.readings.subscriptions() + (self.packs.subscriptions() if self.packs else [])
        subs += [f for f, _ in self.senml]
        return list(dict.fromkeys(subs))


def _senml_filter(text: str) -> tuple[str, ...]:
    """The segments a SenML topic filter matches (without a ``$share/<group>/`` prefix); ValueError when invalid."""
    match = text
    if text.startswith("$share/"):
        pieces = text.split("/", 2)
        if len(pieces) < 3 or not pieces[1]:
            raise ValueError(f"SenML topic filter {text!r}: write '$share/<group>/<topic filter>'")
        match = pieces[2]
    parts = tuple(match.split("/"))
    if not match or STREAM in match:
        raise ValueError(f"SenML topic filter {text!r}: name a topic (e.g. 'senml/+'); streams come from the records")
    for k, part in enumerate(parts):
        if ("+" in part and part != "+") or ("#" in part and (part != "#" or k != len(parts) - 1)):
            raise ValueError(f"SenML topic filter {text!r}: '+' must be a whole segment, '#' the whole last one")
    return parts


def _filter_matches(parts: tuple[str, ...], topic: str) -> bool:
    names = topic.split("/")
    for k, part in enumerate(parts):
        if part == "#":
            return True
        if k >= len(names) or (part != "+" and part != names[k]):
            return False
    return len(names) == len(parts)


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
    steps: Sequence[float] | None = None,
) -> bytes:
    """The forecast payload (``docs/payloads.md``): stream, ts, forecast_ts, value, model, backend.

    ``value`` is never null (warm-up readings get no forecast at all); ``forecast_ts`` is
    null only while a stream's sample period is still unknown. With the per-stream
    adaptation on, ``lower``/``upper`` (the prediction interval, null for the first few
    forecasts of a stream) and ``anomaly`` (the reading this forecast follows lay far
    outside its own forecast, or a stuck sensor) are added. A network with a horizon of k
    samples (a Dense(k) head) adds ``values``: the k forecasts, each with its ``forecast_ts``
    (one sample period apart; the first is ``value``).
    """
    return ForecastEncoder(model_id, backend).encode(stream, ts, forecast_ts, value, lower, upper, anomaly, steps)


class ForecastEncoder:
    """:func:`encode_forecast` for one model, with each stream's JSON prefix kept (the worker's hot path)."""

    __slots__ = ("_heads", "_tail", "limit")

    def __init__(self, model_id: str, backend: str, *, limit: int = _CACHE_SIZE) -> None:
        self._tail = f',"model":{_json_str(model_id)},"backend":{_json_str(backend)}'
        self._heads: dict[str, str] = {}
        self.limit = limit

    def encode(
        self,
        stream: str,
        ts: float,
        forecast_ts: float | None,
        value: float,
        lower: float | None = None,
        upper: float | None = None,
        anomaly: bool | None = None,
        steps: Sequence[float] | None = None,
    ) -> bytes:
        if not math.isfinite(value):
            raise ValueError(f"forecast value {value} for stream {stream!r} is not finite")
        head = self._heads.get(stream)
        if head is None:
            if len(self._heads) >= self.limit:
                self._heads.clear()
            head = self._heads[stream] = f'{{"stream":{_json_str(stream)},"ts":'
        fts = "null" if forecast_ts is None or not math.isfinite(forecast_ts) else repr(float(forecast_ts))
        # formatted directly (float repr is valid JSON): this runs once per forecast on the worker thread
        text = f'{head}{float(ts)!r},"forecast_ts":{fts},"value":{float(value)!r}{self._tail}'
        if anomaly is not None:
            lo = "null" if lower is None or not math.isfinite(lower) else repr(float(lower))
            hi = "null" if upper is None or not math.isfinite(upper) else repr(float(upper))
            text += f',"lower":{lo},"upper":{hi},"anomaly":{"true" if anomaly else "false"}'
        if steps is not None:
            text += ',"values":' + _steps_json(float(ts), forecast_ts, steps)
        return (text + "}").encode()


def _steps_json(ts: float, forecast_ts: float | None, steps: Sequence[float]) -> str:
    """``[{"forecast_ts": t_k, "value": v_k}, ...]``: step k is k sample periods after the reading."""
    dated = forecast_ts is not None and math.isfinite(forecast_ts)
    period = forecast_ts - ts if dated else 0.0  # type: ignore[operator]
    items = []
    for k, v in enumerate(steps, start=1):
        if not math.isfinite(v):
            raise ValueError(f"forecast step {k} value {v} is not finite")
        fts = repr(ts + k * period) if dated else "null"
        items.append(f'{{"forecast_ts":{fts},"value":{float(v)!r}}}')
    return "[" + ",".join(items) + "]"


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
    # a network with a horizon of k > 1 samples: ((forecast_ts, value), ...) of the k steps
    values: tuple[tuple[float | None, float], ...] | None = None


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
    steps = None
    if doc.get("values") is not None:
        raw = doc["values"]
        if not isinstance(raw, list) or not raw or not all(isinstance(v, dict) for v in raw):
            raise _reject(DropReason.BAD_PAYLOAD, "forecast field 'values' must be a list of {forecast_ts, value}")
        steps = tuple(
            (
                None if v.get("forecast_ts") is None else _number(v["forecast_ts"], "values.forecast_ts"),
                _number(v.get("value"), "values.value"),
            )
            for v in raw
        )
    return Forecast(
        stream=doc["stream"],
        ts=_number(doc["ts"], "ts"),
        forecast_ts=None if fts is None else _number(fts, "forecast_ts"),
        value=_number(doc["value"], "value"),
        model=doc["model"],
        backend=doc["backend"],
        anomaly=anomaly,
        values=steps,
        **bounds,
    )
