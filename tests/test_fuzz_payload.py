"""Fuzzing the daemon's input side: payload parser, topic-to-stream mapping, and ``Worker.submit``.

Every input gives a correct result or a :class:`PayloadError` with a known reason; never
another exception, and never a reading that is neither published nor counted as dropped.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import edge_gru
from edge_gru.daemon.config import MqttConfig, StreamsConfig
from edge_gru.daemon.mqttclient import MqttClient
from edge_gru.daemon.payload import (
    MAX_EPOCH_S,
    MAX_PAYLOAD_BYTES,
    TopicMap,
    encode_forecast,
    output_topic,
    parse_payload,
    validate_output_template,
)
from edge_gru.daemon.worker import Worker
from edge_gru.errors import PayloadError
from tests.bundles import make_bundle

PAYLOAD_REASONS = {
    *("empty", "too_large", "not_a_number", "not_finite"),
    *("bad_json", "bad_utf8", "missing_field", "bad_ts"),
}
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SNAKE = re.compile(r"^[a-z][a-z0-9_]*$")

finite = st.floats(allow_nan=False, allow_infinity=False)
epoch = st.floats(min_value=-MAX_EPOCH_S, max_value=MAX_EPOCH_S, allow_nan=False)  # before 1970 is valid
json_scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20))
json_value = st.recursive(
    json_scalar,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
feature_names = st.lists(
    st.text(min_size=1, max_size=10).filter(lambda s: s not in ("ts", "timestamp", "time")),
    min_size=1,
    max_size=4,
    unique=True,
)


def check_outcome(payload: bytes, features: tuple[str, ...]) -> tuple[np.ndarray, float | None] | None:
    """Parse; assert the result is well formed or the error carries a known reason. None on a rejection."""
    try:
        values, ts = parse_payload(payload, features)
    except PayloadError as exc:
        reason = getattr(exc, "reason", None)
        assert reason in PAYLOAD_REASONS, (payload[:80], reason, str(exc))
        assert str(exc).startswith(reason)
        return None
    assert values.dtype == np.float64 and values.shape == (len(features),)
    assert np.isfinite(values).all()
    assert ts is None or (math.isfinite(ts) and abs(ts) <= MAX_EPOCH_S)
    return values, ts


@FUZZ
@given(payload=st.binary(max_size=300), n_features=st.integers(1, 3))
@example(payload=b"[" * 15_000, n_features=1)
@example(payload=b'{"a":' * 3_000, n_features=1)
@example(payload=b"\xef\xbb\xbf21.5", n_features=1)
@example(payload=b"1_000", n_features=1)
@example(payload=b"0x10", n_features=1)
@example(payload=b"1e999", n_features=1)
@example(payload=b"+nan", n_features=1)
@example(payload=b'{"value": 1e999}', n_features=1)
@example(payload=b'{"value": "1e999"}', n_features=1)
@example(payload=b'{"value": 1, "ts": "9999-12-31T23:59:59+00:00"}', n_features=1)
@example(payload=b'{"value": 1, "ts": "0001-01-01T00:00:00+00:00"}', n_features=1)
@example(payload=b'{"value": 1, "ts": -0.0}', n_features=1)
@example(payload=b'{"value": 1, "ts": 1' + b"0" * 400 + b"}", n_features=1)
@example(payload=b'{"value": 1' + b"0" * 400 + b"}", n_features=1)
def test_any_bytes_parse_or_fail_with_a_reason(payload: bytes, n_features: int) -> None:
    check_outcome(payload, tuple(f"f{i}" for i in range(n_features)) if n_features > 1 else ("value",))


@FUZZ
@given(doc=st.dictionaries(st.sampled_from(["value", "ts", "timestamp", "time", "temp", "x"]), json_value))
def test_any_json_object_parses_or_fails_with_a_reason(doc: dict) -> None:
    payload = json.dumps(doc).encode()
    if len(payload) > MAX_PAYLOAD_BYTES:
        return
    check_outcome(payload, ("value",))


@FUZZ
@given(value=finite, ts=st.one_of(st.none(), epoch), extra=st.dictionaries(st.text(max_size=8), json_value, max_size=3))
def test_a_valid_reading_round_trips_exactly(value: float, ts: float | None, extra: dict) -> None:
    doc = {k: v for k, v in extra.items() if k not in ("value", "ts", "timestamp", "time")}
    doc["value"] = value
    if ts is not None:
        doc["ts"] = ts
    values, got_ts = parse_payload(json.dumps(doc).encode(), ("value",))
    assert values.tolist() == [value] and got_ts == ts
    padded = b" \t" + repr(value).encode() + b"\r\n"
    assert parse_payload(padded, ("value",))[0].tolist() == [value]
    assert parse_payload(repr(value).encode(), ("value",)) == (pytest.approx(np.array([value])), None)


@FUZZ
@given(names=feature_names, data=st.data())
def test_multi_feature_readings_come_back_in_model_order(names: list[str], data: st.DataObject) -> None:
    values = data.draw(st.lists(finite, min_size=len(names), max_size=len(names)))
    doc = dict(zip(names, values, strict=True))
    shuffled = dict(data.draw(st.permutations(list(doc.items()))))
    if len(names) == 1:
        return
    got, ts = parse_payload(json.dumps(shuffled).encode(), tuple(names))
    assert got.tolist() == values and ts is None
    missing = data.draw(st.sampled_from(names))
    del shuffled[missing]
    with pytest.raises(PayloadError) as err:
        parse_payload(json.dumps(shuffled).encode(), tuple(names))
    assert err.value.reason == "missing_field"  # type: ignore[attr-defined]


# -- topics ----------------------------------------------------------------------------------------

# A segment of a topic template: no '/', no wildcards, no '{stream}'.
fixed_segment = st.text(st.characters(codec="utf-8", exclude_characters="/+#{}\x00"), min_size=1, max_size=12)
# What a stream id can be in a topic: anything but '/' (and NUL, which MQTT forbids); '+' and '#'
# cannot be published by a client, but the mapping itself must not care.
stream_id = st.one_of(
    st.text(st.characters(codec="utf-8", exclude_characters="/\x00"), min_size=1, max_size=40),
    st.sampled_from(["+", "#", "..", ".", "~", "$SYS", "{stream}", "ü€😀", "a b", "..\\..\\etc", " ", "x" * 65_536]),
)


@st.composite
def template(draw: st.DrawFn) -> str:
    before = draw(st.lists(fixed_segment, max_size=3))
    after = draw(st.lists(fixed_segment, max_size=3))
    return "/".join([*before, "{stream}", *after])


@FUZZ
@given(templates=st.lists(template(), min_size=1, max_size=3), stream=stream_id, pick=st.integers(0, 2))
def test_a_stream_id_round_trips_through_its_topic(templates: list[str], stream: str, pick: int) -> None:
    topics = TopicMap(templates)
    tpl = templates[pick % len(templates)]
    topic = output_topic(tpl, stream)
    got = topics.stream(topic)
    # another template may claim the topic first, but whatever comes back is one whole segment
    assert got is not None and "/" not in got and got in topic.split("/")
    if len(templates) == 1:
        assert got == stream
    for sub in topics.subscriptions():
        assert sub.count("+") == 1 and "{stream}" not in sub


@FUZZ
@given(templates=st.lists(template(), min_size=1, max_size=3), topic=st.text(max_size=60))
@example(templates=["sensors/{stream}/value"], topic="sensors//value")
@example(templates=["sensors/{stream}/value"], topic="sensors/a/b/value")
@example(templates=["{stream}"], topic="")
@example(templates=["{stream}"], topic="/")
def test_any_topic_maps_to_one_whole_segment_or_none(templates: list[str], topic: str) -> None:
    got = TopicMap(templates).stream(topic)
    if got is not None:
        assert got and "/" not in got
        assert any(output_topic(t, got) == topic for t in templates)


@FUZZ
@given(text=st.text(max_size=40))
@example(text="sensors/{stream}/{stream}")
@example(text="sensors/x{stream}/value")
@example(text="sensors/+/{stream}")
def test_templates_are_accepted_or_refused_with_a_value_error(text: str) -> None:
    for check in (lambda: TopicMap([text]), lambda: validate_output_template(text)):
        try:
            check()
        except ValueError as exc:
            assert repr(text)[1:-1][:10] in str(exc) or text[:10] in str(exc)


@FUZZ
@given(stream=stream_id, value=finite, ts=epoch)
def test_forecast_payload_is_valid_json_for_any_stream(stream: str, value: float, ts: float) -> None:
    raw = encode_forecast(stream=stream, ts=ts, forecast_ts=ts + 60, value=value, model_id="m", backend="numpy")
    doc = json.loads(raw)
    assert doc["stream"] == stream and doc["value"] == value and doc["ts"] == ts


# -- the worker: submit never raises and every reading is accounted for ----------------------------


@pytest.fixture(scope="module")
def small_model(tmp_path_factory: pytest.TempPathFactory) -> edge_gru.Model:
    make_bundle(tmp_path_factory.mktemp("fuzz-bundle") / "b", units=4, warmup=2)
    return edge_gru.load(tmp_path_factory.getbasetemp() / "fuzz-bundle0" / "b", backend="numpy")


message = st.tuples(
    st.one_of(
        st.builds(lambda s: f"sensors/{s}/value", stream_id),
        st.text(max_size=30),
        st.sampled_from(["sensors//value", "sensors/a", "sensors/a/value/x", "", "/"]),
    ),
    st.one_of(
        st.binary(max_size=60),
        st.builds(
            lambda v, t: json.dumps({"value": v, "ts": t}).encode(),
            st.floats(),
            st.one_of(epoch, st.floats(), st.text(max_size=5)),
        ),
        st.builds(lambda v: repr(v).encode(), st.floats()),
    ),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(messages=st.lists(message, max_size=40), queue_size=st.integers(1, 8), max_streams=st.integers(1, 4))
def test_submit_never_raises_and_every_reading_is_accounted(
    small_model: edge_gru.Model, messages: list[tuple[str, bytes]], queue_size: int, max_streams: int
) -> None:
    # The daemon's own MQTT client (never connected): it refuses topics MQTT cannot carry
    # (wildcards, over 65,535 bytes) exactly as in production, and the worker counts those.
    client = MqttClient(
        MqttConfig(host="127.0.0.1", port=1, client_id="fuzz"), subscriptions=[], on_message=lambda *a: True
    )
    worker = Worker(
        model=small_model,
        publisher=client,
        settings=StreamsConfig(queue_size=queue_size, max_streams=max_streams, batch_size=3),
    )
    for k, (topic, payload) in enumerate(messages):
        worker.submit(topic, payload, received=1000.0 + k)
        if k % 5 == 4:
            worker.process_available()
    while worker.process_available():
        pass
    st_ = worker.stats
    assert st_.received == len(messages)
    assert st_.received == st_.published + sum(st_.dropped.values()) + worker.queued
    assert worker.queued == 0 and len(worker.pool) <= max_streams
    assert all(SNAKE.match(reason) for reason in st_.dropped)
    json.dumps(worker.snapshot())  # the stats payload stays JSON-serialisable


def test_a_64_kib_stream_id_is_served_or_counted(small_model: edge_gru.Model) -> None:
    """With the id limit raised to MQTT's: an id whose output topic is too long for MQTT is publish_failed."""
    client = MqttClient(
        MqttConfig(host="127.0.0.1", port=1, client_id="fuzz"), subscriptions=[], on_message=lambda *a: True
    )
    worker = Worker(
        model=small_model, publisher=client, settings=StreamsConfig(input=("s/{stream}",), max_id_bytes=65_535)
    )
    long_ok = "x" * (65_535 - len("predictions/"))
    too_long = "y" * 65_536
    for k in range(4):
        for sid in (long_ok, too_long, "+", "#"):
            worker.submit(f"s/{sid}", json.dumps({"value": 1.0 + k, "ts": 100.0 + k}).encode())
    while worker.process_available():
        pass
    st_ = worker.stats
    assert st_.received == 16
    assert st_.dropped["id_too_long"] == 4  # 65,536 bytes: over the limit, never a stream
    assert st_.dropped["warmup"] == 3  # one per stream (warm-up 2)
    assert st_.published == 3  # only the id whose output topic fits
    assert st_.dropped["publish_failed"] == 6  # '+' and '#' (3 forecasts each)
    assert st_.received == st_.published + sum(st_.dropped.values())
    assert len(worker.pool) == 3


def test_stream_ids_beyond_max_id_bytes_are_counted_never_served(small_model: edge_gru.Model) -> None:
    """The default limit (256 UTF-8 bytes) counts longer ids as id_too_long; multi-byte characters count as bytes."""
    kept = Kept()
    worker = Worker(model=small_model, publisher=kept, settings=StreamsConfig(input=("s/{stream}",)))
    ids = {"a" * 256: True, "a" * 257: False, "é" * 128: True, "é" * 129: False, "x" * 65_000: False}
    for k in range(4):
        for sid in ids:
            worker.submit(f"s/{sid}", json.dumps({"value": 1.0 + k, "ts": 100.0 + k}).encode())
    while worker.process_available():
        pass
    st_ = worker.stats
    assert st_.dropped["id_too_long"] == 4 * 3
    assert sorted(worker.pool.stream_ids) == sorted(sid for sid, ok in ids.items() if ok)
    assert {json.loads(p)["stream"] for p in kept.payloads} == {sid for sid, ok in ids.items() if ok}
    assert st_.received == st_.published + sum(st_.dropped.values())


def test_no_file_is_written_by_parsing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for payload in (b"../../etc/x", b'{"value": 1, "ts": "../../x"}', b"/tmp/x", b"\x00" * 10):
        check_outcome(payload, ("value",))
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def default_model() -> edge_gru.Model:
    from edge_gru.harness import DEFAULT_MODEL

    return edge_gru.load(DEFAULT_MODEL, backend="numpy")


class Kept:
    def __init__(self) -> None:
        self.payloads: list[bytes] = []

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        self.payloads.append(payload)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(finite, min_size=1, max_size=30))
@example(values=[1.0, 2.0, 1e300, -1e300, 1e308, -1e308] * 3)
def test_extreme_finite_values_never_stop_the_worker(default_model: edge_gru.Model, values: list[float]) -> None:
    """Huge readings may overflow a stream's normalization; the batch still completes and is accounted."""
    kept = Kept()
    worker = Worker(model=default_model, publisher=kept, settings=StreamsConfig(input=("s/{stream}",)))
    for k, v in enumerate(values):
        worker.submit("s/wild", json.dumps({"value": v, "ts": 1000.0 + k}).encode())
        worker.submit("s/calm", json.dumps({"value": 20.0 + k % 3, "ts": 1000.0 + k}).encode())
    while worker.process_available():
        pass
    st_ = worker.stats
    assert st_.received == 2 * len(values) == st_.published + sum(st_.dropped.values())
    calm = [json.loads(p) for p in kept.payloads if json.loads(p)["stream"] == "calm"]
    assert len(calm) == max(0, len(values) - default_model.manifest.warmup + 1)  # the calm stream is untouched
    assert all(math.isfinite(json.loads(p)["value"]) for p in kept.payloads)
    # once the sensor is sane again the stream recovers: it warms up afresh and forecasts
    before = len(kept.payloads)
    n = len(values)
    for k in range(2 * default_model.manifest.warmup + 2):
        worker.submit("s/wild", json.dumps({"value": 20.0 + k % 3, "ts": 1000.0 + n + k}).encode())
    while worker.process_available():
        pass
    assert any(json.loads(p)["stream"] == "wild" for p in kept.payloads[before:])
