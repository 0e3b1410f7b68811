"""Packs: several readings per message (JSON arrays of readings, SenML RFC 8428).

A pack must mean exactly what its readings mean when each comes alone: the tests compare
packs with the same readings sent one per message (the worker, and a real daemon through
a real mosquitto), with values resolved by hand from the RFC's rules, and fuzz the parsers
so that every record ends as a reading or a counted drop with a known reason.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import edge_gru
from edge_gru.daemon.config import StreamsConfig
from edge_gru.daemon.payload import (
    SENML_RELATIVE_S,
    DropReason,
    InputTopics,
    Pack,
    Route,
    parse_pack,
    parse_payload,
    parse_senml,
)
from edge_gru.daemon.worker import Worker
from edge_gru.errors import PayloadError
from edge_gru.harness import DEFAULT_MODEL, Broker, Daemon, Publisher, Watcher, wait_until
from tests.bundles import make_bundle

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PAYLOAD_REASONS = {r for r in DropReason if r.from_payload} | {DropReason.NOT_FINITE}
TS0 = 1_700_000_000.0


def counted(pack: Pack) -> None:
    assert all(r in PAYLOAD_REASONS for r in pack.drops), pack.drops
    assert all(n > 0 for n in pack.drops.values())
    assert (pack.detail is None) == (not pack.drops)
    for stream, values, ts in pack.readings:
        assert isinstance(stream, str) and stream
        assert len(values) == 1 and all(type(v) is float and math.isfinite(v) for v in values)
        assert ts is None or math.isfinite(ts)


# -- SenML by the RFC's rules ----------------------------------------------------------------------


def test_senml_resolves_base_name_time_and_value_as_the_rfc_says() -> None:
    pack = parse_senml(
        json.dumps(
            [
                {"bn": "urn:dev:ow:10e2073a01080063:", "bt": 1.320067464e09, "bu": "%RH", "v": 20},
                {"u": "lon", "v": 24.30621, "n": "lon"},
                {"n": "lat", "v": 60.07965, "t": 5},
                {"bn": "room/", "bv": 10, "n": "t", "v": 1.5, "t": -2},
                {"n": "t", "v": -1},
            ]
        ).encode(),
        ("value",),
        received=0.0,
    )
    assert pack.drops == {}
    assert pack.readings == [
        ("urn:dev:ow:10e2073a01080063:", (20.0,), 1.320067464e09),
        ("urn:dev:ow:10e2073a01080063:lon", (24.30621,), 1.320067464e09),
        ("urn:dev:ow:10e2073a01080063:lat", (60.07965,), 1.320067464e09 + 5),
        ("room/t", (11.5,), 1.320067464e09 - 2),
        ("room/t", (9.0,), 1.320067464e09),
    ]


def test_senml_times_below_2_28_are_relative_to_the_receive_time_and_none_is_no_ts() -> None:
    received = 1_750_000_000.0
    pack = parse_senml(b'[{"n":"a","v":1,"t":-30},{"n":"a","v":2,"t":0},{"n":"a","v":3}]', ("v",), received=received)
    assert [ts for _, _, ts in pack.readings] == [received - 30, received, None]
    # an absolute time stays absolute, and the boundary is 2**28
    pack = parse_senml(b'[{"n":"a","v":1,"t":%d}]' % int(SENML_RELATIVE_S), ("v",), received=received)
    assert pack.readings[0][2] == SENML_RELATIVE_S


def test_senml_records_are_dropped_one_by_one_with_their_reason() -> None:
    records: list[dict[str, Any]] = [
        {"bn": "dev:", "n": "ok", "v": 1, "t": TS0},
        {"n": "bad name", "v": 1, "t": TS0},  # a space: outside RFC 8428's name characters
        {"n": "s", "vs": "on", "t": TS0},
        {"n": "b", "vb": True, "t": TS0},
        {"n": "m", "t": TS0},
        {"n": "q", "v": "21.5", "t": TS0},  # SenML numbers are JSON numbers
        {"n": "ms", "v": 1, "t": TS0 * 1000},  # milliseconds
        {"n": "ts", "v": 1, "t": "now"},
        {"bn": "", "n": "", "v": 1},  # an empty resolved name
        {"bn": "dev:", "n": "ok2", "v": 1, "t": TS0},
    ]
    pack = parse_senml(json.dumps(records).encode(), ("value",), received=0.0)
    assert [(s, v) for s, v, _ in pack.readings] == [("dev:ok", (1.0,)), ("dev:ok2", (1.0,))]
    assert pack.drops == {
        DropReason.BAD_NAME: 2,
        DropReason.NOT_A_NUMBER: 3,
        DropReason.MISSING_FIELD: 1,
        DropReason.BAD_TS: 2,
    }
    assert pack.count == len(records)


@pytest.mark.parametrize(
    ("records", "why"),
    [
        ([{"n": "a", "v": 1}, 5], "not an object"),
        ([{"bn": 3, "n": "a", "v": 1}, {"n": "b", "v": 2}], "'bn' must be a string"),
        ([{"n": "a", "v": 1}, {"bt": "yesterday", "n": "b", "v": 2}], "'bt' must be a finite number"),
        ([{"bver": 11, "n": "a", "v": 1}, {"n": "b", "v": 2}], "bver 11"),
        ([{"n": "a", "v": 1, "crit_": 1}, {"n": "b", "v": 2}], "must be understood"),
    ],
)
def test_a_senml_pack_broken_as_a_whole_drops_every_record(records: list[Any], why: str) -> None:
    pack = parse_senml(json.dumps(records).encode(), ("value",), received=0.0)
    assert pack.readings == [] and pack.drops == {DropReason.BAD_PACK: len(records)}
    assert pack.detail is not None and why in pack.detail


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", DropReason.EMPTY),
        (b"[]", DropReason.EMPTY),
        (b"[{", DropReason.BAD_JSON),
        (b"\xff[]", DropReason.BAD_UTF8),
        (b'{"n": "a", "v": 1}', DropReason.BAD_PACK),
        (b"21.5", DropReason.BAD_PACK),
    ],
)
def test_an_unreadable_pack_is_one_dropped_reading(payload: bytes, reason: DropReason) -> None:
    for pack in (parse_senml(payload, ("value",), received=0.0), parse_pack(payload, "s", ("value",))):
        assert pack.readings == [] and pack.drops == {reason: 1} and pack.count == 1


def test_a_multi_input_model_drops_every_senml_record_as_missing_field() -> None:
    pack = parse_senml(b'[{"bn":"a","bt":0},{"n":"x","v":1},{"n":"y","v":2}]', ("a", "b"), received=0.0)
    assert pack.readings == [] and pack.drops == {DropReason.MISSING_FIELD: 2}


def test_a_pack_over_max_payload_bytes_is_too_large() -> None:
    body = json.dumps([{"n": f"s{i}", "v": i} for i in range(200)]).encode()
    assert parse_senml(body, ("v",), received=0.0, max_bytes=len(body) - 1).drops == {DropReason.TOO_LARGE: 1}
    assert len(parse_senml(body, ("v",), received=0.0, max_bytes=len(body)).readings) == 200


# -- arrays of readings: each element as one message ----------------------------------------------


element = st.one_of(
    st.builds(dict, value=st.floats(allow_nan=False, allow_infinity=False), ts=st.floats(-1e11, 1e11)),
    st.floats(allow_nan=False),
    st.dictionaries(st.sampled_from(["value", "ts", "temp", "x"]), st.one_of(st.none(), st.text(max_size=5))),
    st.lists(st.floats(), max_size=3),
    st.none() | st.booleans() | st.text(max_size=5),
)


@FUZZ
@given(elements=st.lists(element, min_size=1, max_size=12), n_features=st.integers(1, 2))
def test_each_element_of_an_array_pack_reads_as_it_would_alone(elements: list[Any], n_features: int) -> None:
    features = ("value",) if n_features == 1 else ("value", "temp")
    pack = parse_pack(json.dumps(elements).encode(), "kitchen", features)
    counted_ok = 0
    alone: dict[DropReason, int] = {}
    expected = []
    for e in elements:
        try:
            values, ts = parse_payload(json.dumps(e).encode(), features)
        except PayloadError as exc:
            reason = exc.reason  # type: ignore[attr-defined]
            alone[reason] = alone.get(reason, 0) + 1
        else:
            counted_ok += 1
            expected.append(("kitchen", tuple(values.tolist()), ts))
    assert pack.readings == expected
    assert pack.drops == alone
    assert pack.count == len(elements)


# -- fuzz: any bytes and any record lists are accounted --------------------------------------------

json_scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=12))
record = st.dictionaries(
    st.sampled_from(["bn", "bt", "bv", "bu", "bver", "n", "v", "t", "u", "vs", "vb", "s", "x_", "z"]),
    json_scalar,
    max_size=6,
)


@FUZZ
@given(payload=st.binary(max_size=200))
@example(payload=b"[" * 15_000)
@example(payload=b'[{"n":"a","v":1' + b"0" * 400 + b"}]")
@example(payload=b'[{"n":"a","v":1,"bt":1' + b"0" * 400 + b"}]")
@example(payload=b'[{"n":"a","v":1,"t":1' + b"0" * 400 + b"}]")
def test_any_bytes_as_a_pack_are_readings_or_counted_drops(payload: bytes) -> None:
    for pack in (parse_senml(payload, ("value",), received=TS0), parse_pack(payload, "s", ("value",))):
        counted(pack)
        assert pack.count >= 1


@FUZZ
@given(records=st.lists(st.one_of(record, json_scalar), min_size=1, max_size=10))
@example(records=[{"bt": 1e300, "n": "a", "v": 1, "t": 1e300}])
@example(records=[{"bv": 1e308, "n": "a", "v": 1e308}])
def test_any_senml_records_are_readings_or_counted_drops(records: list[Any]) -> None:
    try:
        payload = json.dumps(records).encode()
    except ValueError:
        return
    pack = parse_senml(payload, ("value",), received=TS0)
    counted(pack)
    base_only = sum(
        1 for r in records if isinstance(r, dict) and r and set(r) <= {"bn", "bt", "bu", "bv", "bs", "bver"}
    )
    if DropReason.BAD_PACK in pack.drops:
        assert pack.drops == {DropReason.BAD_PACK: len(records)}
    else:
        assert pack.count == len(records) - base_only


@FUZZ
@given(
    rows=st.lists(
        st.tuples(
            st.sampled_from(["a", "b:c", "d/e", "f-1", "g_2"]),
            st.floats(-1e6, 1e6),
            st.floats(1e9, 2e9),
        ),
        min_size=1,
        max_size=20,
    ),
    base=st.booleans(),
)
def test_valid_senml_round_trips_exactly(rows: list[tuple[str, float, float]], base: bool) -> None:
    if base:  # the first record's name and time as base fields, the rest relative to them
        bt = rows[0][2]
        records = [{"bn": "x.", "bt": bt, "n": n, "v": v, "t": t - bt} for n, v, t in rows]
        want = [("x." + n, (v,), bt + (t - bt)) for n, v, t in rows]
    else:
        records = [{"n": n, "v": v, "t": t} for n, v, t in rows]
        want = [(n, (v,), t) for n, v, t in rows]
    pack = parse_senml(json.dumps(records).encode(), ("value",), received=0.0)
    assert pack.drops == {} and pack.readings == want


def test_topics_route_by_input_then_pack_input_then_senml_filters() -> None:
    topics = InputTopics(["s/{stream}/v"], ["s/{stream}/batch"], ["senml/+", "gw/#"])
    assert topics.route("s/k/v") == (Route.READING, "k")
    assert topics.route("s/k/batch") == (Route.PACK, "k")
    assert topics.route("senml/g1") == (Route.SENML, None)
    assert topics.route("gw") == (Route.SENML, None) and topics.route("gw/a/b") == (Route.SENML, None)
    assert topics.route("senml/g1/x") == (Route.READING, None)  # unknown: '+' is one segment
    assert topics.subscriptions() == ["s/+/v", "s/+/batch", "senml/+", "gw/#"]
    for bad in ("senml/{stream}", "a/#/b", "a/b+", ""):
        with pytest.raises(ValueError):
            InputTopics(["s/{stream}/v"], (), [bad])


# -- the worker: packs equal single messages -------------------------------------------------------


class Kept:
    def __init__(self) -> None:
        self.out: list[tuple[str, dict[str, Any]]] = []

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        self.out.append((topic, json.loads(payload)))


@pytest.fixture(scope="module")
def small_model(tmp_path_factory: pytest.TempPathFactory) -> edge_gru.Model:
    path = tmp_path_factory.mktemp("packs-bundle") / "b"
    make_bundle(path, units=4, warmup=2)
    return edge_gru.load(path, backend="numpy")


def worker(model: edge_gru.Model, **kw: Any) -> tuple[Worker, Kept]:
    kept = Kept()
    s = StreamsConfig(input=("s/{stream}/v",), pack_input=("s/{stream}/batch",), senml_input=("senml/+",), **kw)
    return Worker(model=model, publisher=kept, settings=s), kept


def series(n_streams: int, n: int) -> list[tuple[str, float, float]]:
    """(stream, value, ts) in arrival order, streams interleaved."""
    rng = np.random.default_rng(7)
    return [(f"st{s}", float(20 + rng.normal()), TS0 + 60.0 * t) for t in range(n) for s in range(n_streams)]


def senml_packs(rows: list[tuple[str, float, float]], size: int) -> list[bytes]:
    out = []
    for k in range(0, len(rows), size):
        chunk = rows[k : k + size]
        bt = chunk[0][2]
        recs: list[dict[str, Any]] = [{"n": s, "v": v, "t": t - bt} for s, v, t in chunk]
        recs[0].update(bn="", bt=bt)
        out.append(json.dumps(recs).encode())
    return out


def test_packs_forecast_exactly_as_single_messages(small_model: edge_gru.Model) -> None:
    rows = series(7, 12)
    single, kept_single = worker(small_model)
    for s, v, t in rows:
        single.submit(f"s/{s}/v", json.dumps({"value": v, "ts": t}).encode(), received=1.0)
    while single.process_available():
        pass
    senml, kept_senml = worker(small_model, batch_size=5)
    for payload in senml_packs(rows, 9):
        senml.submit("senml/gw", payload, received=1.0)
    while senml.process_available():
        pass
    arrays, kept_arrays = worker(small_model)
    for s in sorted({r[0] for r in rows}):
        mine = [{"value": v, "ts": t} for n, v, t in rows if n == s]
        arrays.submit(f"s/{s}/batch", json.dumps(mine[:5]).encode(), received=1.0)
        arrays.submit(f"s/{s}/batch", json.dumps(mine[5:]).encode(), received=1.0)
    while arrays.process_available():
        pass

    def table(kept: Kept) -> tuple[list[tuple[Any, ...]], np.ndarray]:
        rows = sorted((t, d["stream"], d["ts"], d["forecast_ts"], d["value"]) for t, d in kept.out)
        return [r[:4] for r in rows], np.array([r[4] for r in rows])

    want, want_y = table(kept_single)
    assert len(want) == 7 * (12 - 1)  # warm-up 2: every reading after the first forecasts
    for kept in (kept_senml, kept_arrays):
        got, got_y = table(kept)
        assert got == want
        # the numpy backend's float32 matmul may round differently in batches of another shape
        np.testing.assert_allclose(got_y, want_y, rtol=1e-6)
    for w in (single, senml, arrays):
        assert w.stats.received == len(rows) == w.stats.published + sum(w.stats.dropped.values())


@pytest.mark.parametrize("policy", ["drop_oldest", "drop_newest"])
def test_a_pack_larger_than_the_queue_keeps_by_policy_and_counts_the_rest(
    small_model: edge_gru.Model, policy: str
) -> None:
    w, _ = worker(small_model, queue_size=4, queue_policy=policy)
    recs = [{"n": "a", "v": float(i), "t": TS0 + i} for i in range(10)]
    w.submit("senml/gw", json.dumps(recs).encode(), received=1.0)
    assert w.queued == 4 and w.stats.dropped[DropReason.QUEUE_FULL] == 6
    kept_ts = [item[2] for item in w._queue]
    assert kept_ts == ([TS0 + i for i in range(6, 10)] if policy == "drop_oldest" else [TS0 + i for i in range(4)])
    while w.process_available():
        pass
    assert w.stats.received == 10 == w.stats.published + sum(w.stats.dropped.values())


def test_a_broken_pack_counts_all_its_records_in_the_stats(small_model: edge_gru.Model) -> None:
    w, _ = worker(small_model)
    w.submit("senml/gw", json.dumps([{"bver": 99}] + [{"n": "a", "v": 1}] * 30).encode())
    w.submit("senml/gw", b"[{not json")
    w.submit("s/a/batch", b"[1, 2, null]")
    while w.process_available():
        pass
    snap = w.snapshot()
    assert snap["received"] == 31 + 1 + 3
    assert snap["dropped"]["bad_pack"] == 31 and snap["dropped"]["bad_json"] == 1
    assert snap["dropped"]["not_a_number"] == 1
    assert snap["received"] == snap["published"] + sum(snap["dropped"].values())


# -- a real daemon through a real mosquitto --------------------------------------------------------


@pytest.mark.timeout(240)
def test_daemon_forecasts_from_packs_equal_single_messages(broker: Broker, tmp_path: Any, topic_prefix: str) -> None:
    """The same readings as single messages (streams a*), SenML packs (b*) and arrays (c*): equal forecasts."""
    p = topic_prefix
    daemon = Daemon(
        tmp_path,
        broker=broker,
        client_id=f"d-{p}",
        own_numba_cache=False,
        sections={
            "model": {"path": str(DEFAULT_MODEL), "backend": "numba"},  # exact whatever the batches
            "streams": {
                "input": [f"{p}/in/{{stream}}/value"],
                "pack_input": [f"{p}/in/{{stream}}/batch"],
                "senml_input": [f"{p}/senml/+"],
                "output": f"{p}/out/{{stream}}",
            },
        },
    )
    watcher = Watcher(broker.host, broker.port, [f"{p}/out/+", daemon.stats_topic], protocol="5")
    pub = Publisher(broker.host, broker.port, protocol="5")
    try:
        daemon.start()
        daemon.wait_ready(90)
        rows = series(10, 15)
        messages: list[tuple[str, bytes]] = []
        for s, v, t in rows:
            messages.append((f"{p}/in/a{s}/value", json.dumps({"value": v, "ts": t}).encode()))
        for payload in senml_packs([("b" + s, v, t) for s, v, t in rows], 50):
            messages.append((f"{p}/senml/gw", payload))
        for s in sorted({r[0] for r in rows}):
            mine = [{"value": v, "ts": t} for n, v, t in rows if n == s]
            messages.append((f"{p}/in/c{s}/batch", json.dumps(mine).encode()))
        messages.append((f"{p}/senml/gw", json.dumps([{"bver": 99}] + [{"n": "z", "v": 1}] * 9).encode()))
        pub.publish_all(messages)
        model = edge_gru.load(DEFAULT_MODEL, backend="numba")
        per_kind = 10 * (15 - model.manifest.warmup + 1)
        wait_until(lambda: len(watcher.on(f"{p}/out/+")) >= 3 * per_kind, 60, f"{3 * per_kind} forecasts")
        docs = [json.loads(m) for m in watcher.on(f"{p}/out/+")]
        got: dict[str, dict[str, list[tuple[float, float]]]] = {"a": {}, "b": {}, "c": {}}
        for d in docs:
            got[d["stream"][0]].setdefault(d["stream"][1:], []).append((d["ts"], d["value"]))
        assert got["a"] == got["b"] == got["c"]
        assert sum(len(v) for v in got["a"].values()) == per_kind
        # and the single messages themselves equal pool.update of the same readings
        pool = model.pool(100)
        want: dict[str, list[tuple[float, float]]] = {}
        for s, v, t in rows:
            y = pool.update([s], [v], [t])[0]
            if np.isfinite(y):
                want.setdefault(s, []).append((t, float(y)))
        assert got["a"] == want
        stats = wait_until(
            lambda: (s := watcher.latest_stats(daemon)) and s["received"] == 3 * len(rows) + 10 and s,
            20,
            "stats counting every reading",
        )
        assert stats["dropped"]["bad_pack"] == 10
        assert stats["published"] == 3 * per_kind
        assert stats["received"] == stats["published"] + sum(stats["dropped"].values()) + stats["queued"]
    finally:
        pub.client.loop_stop()
        watcher.close()
        daemon.stop()
