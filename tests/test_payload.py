"""Payload parsing, topic templates and the forecast encoding (no broker needed)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from edge_gru.daemon.payload import (
    STATUS_REASONS,
    DropReason,
    Forecast,
    TopicMap,
    decode_forecast,
    encode_forecast,
    output_topic,
    parse_payload,
    validate_output_template,
)
from edge_gru.errors import PayloadError

ONE = ("value",)
THREE = ("temp", "humidity", "pressure")


@pytest.mark.parametrize(
    ("payload", "value", "ts"),
    [
        (b"21.5", 21.5, None),
        (b" -3e2 \n", -300.0, None),
        (b'{"value": 21.5}', 21.5, None),
        (b'{"value": 21.5, "ts": 1732600000.25}', 21.5, 1732600000.25),
        (b'{"value": "21.5", "ts": "2024-11-26T05:46:40Z", "battery": 97}', 21.5, 1732600000.0),
        (b'{"value": 7, "timestamp": 1732600000}', 7.0, 1732600000.0),
        # the one timestamp rule (edge_gru.timestamps): before 1970 is valid, naive ISO times are UTC
        (b'{"value": 1, "ts": -5}', 1.0, -5.0),
        (b'{"value": 1, "ts": "1958-03-29T00:00:00"}', 1.0, -371174400.0),
        (b'{"value": 1, "ts": "2024-11-26T05:46:40"}', 1.0, 1732600000.0),
        (b'{"value": 1, "ts": "2024-11-26T07:46:40+02:00"}', 1.0, 1732600000.0),
        (b"[4.5]", 4.5, None),
    ],
)
def test_accepted_forms(payload: bytes, value: float, ts: float | None) -> None:
    values, got_ts = parse_payload(payload, ONE)
    assert values.dtype == np.float64 and values.tolist() == [value]
    assert got_ts == ts


def test_multi_feature_fields_in_model_order() -> None:
    values, ts = parse_payload(b'{"pressure": 1013, "temp": 21.5, "humidity": 40, "ts": 5}', THREE)
    assert values.tolist() == [21.5, 40.0, 1013.0] and ts == 5.0
    assert parse_payload(b"[1, 2, 3]", THREE)[0].tolist() == [1.0, 2.0, 3.0]


# Every malformed payload named in the issue, with the reason the daemon counts it under.
BATTERY = [
    (b"hello", "not_a_number"),
    (b"", "empty"),
    (b"   ", "empty"),
    (b"1" * 1_000_000, "too_large"),
    (b"NaN", "not_finite"),
    (b"nan", "not_finite"),
    (b"inf", "not_finite"),
    (b"-Infinity", "not_finite"),
    (b'{"value": NaN}', "not_finite"),
    (b'{"value": Infinity}', "not_finite"),
    (b'{"value": {"nested": 1}}', "not_a_number"),
    (b'{"value": [1, 2]}', "not_a_number"),
    (b'{"value": null}', "not_a_number"),
    (b'{"value": true}', "not_a_number"),
    (b'{"temperature": 21}', "missing_field"),
    (b'{"value": 1, "ts": "yesterday"}', "bad_ts"),
    (b'{"value": 1, "ts": 1732600000000}', "bad_ts"),
    (b'{"value": 1, "ts": -1e12}', "bad_ts"),
    (b'{"value": 1, "ts": true}', "bad_ts"),
    (b'{"value": 1, "ts": "NaN"}', "bad_ts"),
    (b"\xff\xfe\x00garbage", "bad_utf8"),
    (b'{"value": 1', "bad_json"),
    (b"[" * 5000 + b"]" * 5000, "bad_json"),
    (b'"21.5"', "not_a_number"),
    (b"[1, 2]", "missing_field"),
]


@pytest.mark.parametrize(("payload", "reason"), BATTERY, ids=[r + str(i) for i, (_, r) in enumerate(BATTERY)])
def test_bad_payloads_have_a_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(PayloadError) as info:
        parse_payload(payload, ONE)
    assert info.value.reason == reason  # type: ignore[attr-defined]


def test_plain_number_for_a_multi_feature_model_is_refused() -> None:
    with pytest.raises(PayloadError) as info:
        parse_payload(b"21.5", THREE)
    assert info.value.reason == "missing_field"  # type: ignore[attr-defined]
    assert "humidity" in str(info.value)
    with pytest.raises(PayloadError, match="humidity"):
        parse_payload(b'{"temp": 1, "pressure": 2}', THREE)


def test_topic_map_matches_whole_segments_of_several_templates() -> None:
    topics = TopicMap(["sensors/{stream}/value", "home/{stream}", "a/b/{stream}/c"])
    assert topics.subscriptions() == ["sensors/+/value", "home/+", "a/b/+/c"]
    assert topics.stream("sensors/kitchen/value") == "kitchen"
    assert topics.stream("home/attic") == "attic"
    assert topics.stream("a/b/x-1/c") == "x-1"
    for topic in ("sensors/kitchen", "sensors/kitchen/value/x", "sensors//value", "other/kitchen/value", "home"):
        assert topics.stream(topic) is None, topic


@pytest.mark.parametrize(
    "bad", ["sensors/value", "sensors/{stream}/{stream}", "s/x{stream}", "s/+/{stream}", "#/{stream}"]
)
def test_topic_templates_are_validated(bad: str) -> None:
    with pytest.raises(ValueError, match="template"):
        TopicMap([bad])


def test_output_template() -> None:
    assert output_topic("predictions/{stream}/next", "k1") == "predictions/k1/next"
    for bad in ("predictions", "p/{stream}/{stream}", "p/#/{stream}"):
        with pytest.raises(ValueError):
            validate_output_template(bad)


def test_forecast_payload_contract() -> None:
    doc = json.loads(
        encode_forecast(stream="k", ts=10.0, forecast_ts=11.0, value=1.25, model_id="m-1", backend="numba")
    )
    assert doc == {"stream": "k", "ts": 10.0, "forecast_ts": 11.0, "value": 1.25, "model": "m-1", "backend": "numba"}
    unknown = json.loads(
        encode_forecast(stream="k", ts=10.0, forecast_ts=math.nan, value=1.0, model_id="m", backend="numpy")
    )
    assert unknown["forecast_ts"] is None and unknown["value"] == 1.0
    with pytest.raises(ValueError):
        encode_forecast(stream="k", ts=10.0, forecast_ts=11.0, value=math.nan, model_id="m", backend="numpy")


@pytest.mark.parametrize("stream", ['kitchen "north"', "küche-ü", "back\\slash", "tab\there"])
def test_forecast_payload_is_valid_json_for_any_stream_name(stream: str) -> None:
    raw = encode_forecast(stream=stream, ts=1.5, forecast_ts=None, value=-0.1, model_id="m", backend="numba")
    assert json.loads(raw) == {
        "stream": stream,
        "ts": 1.5,
        "forecast_ts": None,
        "value": -0.1,
        "model": "m",
        "backend": "numba",
    }


def test_shared_subscription_templates() -> None:
    topics = TopicMap(["$share/edge/sensors/{stream}/value"])
    assert topics.subscriptions() == ["$share/edge/sensors/+/value"]
    assert topics.stream("sensors/k1/value") == "k1"  # messages arrive without the $share prefix
    for bad in ("$share/sensors", "$share//sensors/{stream}"):
        with pytest.raises(ValueError):
            TopicMap([bad])


def test_decode_forecast_inverts_encode_and_names_what_is_wrong() -> None:
    raw = encode_forecast(stream="küche", ts=10.0, forecast_ts=70.0, value=-1.5e-7, model_id="m-1", backend="tflite")
    assert decode_forecast(raw) == Forecast("küche", 10.0, 70.0, -1.5e-7, "m-1", "tflite")
    assert (
        decode_forecast(
            encode_forecast(stream="k", ts=1, forecast_ts=None, value=2, model_id="m", backend="b")
        ).forecast_ts
        is None
    )
    for bad, needle in (
        (b"{", "bad_json"),
        (b"[1]", "bad_json"),
        (b'{"stream": "k", "ts": 1, "value": 2, "model": "m", "backend": "b"}', "forecast_ts"),
        (b'{"stream": 5, "ts": 1, "forecast_ts": null, "value": 2, "model": "m", "backend": "b"}', "stream"),
        (b'{"stream": "k", "ts": 1, "forecast_ts": null, "value": null, "model": "m", "backend": "b"}', "value"),
    ):
        with pytest.raises(PayloadError, match=needle):
            decode_forecast(bad)


def test_a_horizon_of_k_samples_adds_dated_values() -> None:
    raw = encode_forecast(
        stream="k", ts=100.0, forecast_ts=160.0, value=1.5, model_id="m", backend="numba", steps=[1.5, 2.0, 2.5]
    )
    doc = json.loads(raw)
    assert doc["values"] == [
        {"forecast_ts": 160.0, "value": 1.5},
        {"forecast_ts": 220.0, "value": 2.0},
        {"forecast_ts": 280.0, "value": 2.5},
    ]
    assert decode_forecast(raw).values == ((160.0, 1.5), (220.0, 2.0), (280.0, 2.5))
    undated = encode_forecast(stream="k", ts=1.0, forecast_ts=None, value=1, model_id="m", backend="b", steps=[1, 2])
    assert decode_forecast(undated).values == ((None, 1.0), (None, 2.0))
    assert (
        decode_forecast(encode_forecast(stream="k", ts=1, forecast_ts=2, value=1, model_id="m", backend="b")).values
        is None
    )
    with pytest.raises(ValueError, match="step 2"):
        encode_forecast(stream="k", ts=1, forecast_ts=2, value=1, model_id="m", backend="b", steps=[1, float("nan")])
    with pytest.raises(PayloadError, match="values"):
        decode_forecast(
            b'{"stream": "k", "ts": 1, "forecast_ts": 2, "value": 2, "model": "m", "backend": "b", "values": 3}'
        )


def test_every_pool_status_has_a_drop_reason_and_the_simulator_knows_every_non_payload_one() -> None:
    from edge_gru.pool import Status
    from sim.transport import NON_PAYLOAD_REASONS

    assert set(STATUS_REASONS) == {s for s in Status if s is not Status.FORECAST}
    assert {str(r) for r in STATUS_REASONS.values()} <= {str(r) for r in DropReason}
    for word in ("forecast_not_finite", "publish_failed", "out_of_range", "id_too_long", "warmup", "queue_full"):
        assert word in NON_PAYLOAD_REASONS
    assert not {"bad_json", "bad_ts", "empty", "too_large"} & NON_PAYLOAD_REASONS
