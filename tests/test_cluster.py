"""Scale-out on a real 3-node NATS cluster: partitioning, handover, failover and accounting.

The daemons run as ``edge-gru serve`` processes with a ``[cluster]`` section; the reference
is one offline :class:`StreamPool` fed the same readings. Nothing waits on a sleep: every
wait polls something observable (the servers' health, the members' stats, the output
stream's message count).
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import edge_gru
from edge_gru.daemon.cluster import Ledger, decode_checkpoint, encode_checkpoint, mappings_conf, subject_mappings
from edge_gru.daemon.config import load_config
from edge_gru.errors import CheckpointError, ConfigError
from edge_gru.harness import Daemon, NatsCluster, free_port, nats_server_binary, toml_text
from edge_gru.pool import Status

nats = pytest.importorskip("nats", reason="the cluster extra (nats-py) is needed")

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "default"
PARTITIONS = 12
STREAMS = 300
T0 = 1_700_000_000.0
PERIOD = 60.0


def member_sections(servers: list[str], *, replicas: int = 3, idle_timeout_s: float = 86400) -> dict[str, Any]:
    """A member's config over the harness's daemon defaults (numpy backend, the shipped bundle)."""
    return {
        "streams": {"idle_timeout_s": idle_timeout_s},
        "state": {"checkpoint_interval_s": 600},
        "stats": {"interval_s": 0},
        "cluster": {
            "enabled": True,
            "servers": servers,
            "partitions": PARTITIONS,
            "lease_ttl_s": 4.0,
            "heartbeat_s": 0.25,
            "duplicate_window_s": 900,
            "retention_s": 3600,
            "replicas": replicas,
        },
    }


def mappings(tmp_path: Path) -> dict[str, str]:
    """The servers' subject mappings for the members' config."""
    probe = tmp_path / "probe.toml"
    probe.write_text(toml_text({"model": {"path": str(MODEL)}, **member_sections(["nats://127.0.0.1:4222"])}))
    return subject_mappings(load_config(probe))


def readings(rounds: range) -> list[tuple[str, float, float]]:
    """(stream, value, ts) for each round and stream: daily-like cycles with noise, deterministic."""
    rng = np.random.default_rng(19)
    phase = rng.uniform(0, 2 * np.pi, STREAMS)
    level = rng.uniform(-5, 30, STREAMS)
    amp = rng.uniform(0.5, 8, STREAMS)
    out = []
    for k in rounds:
        noise = np.random.default_rng(1000 + k).normal(0, 0.2, STREAMS)
        v = level + amp * np.sin(2 * np.pi * k / 24 + phase) + noise
        out += [(f"s{i}", float(v[i]), T0 + PERIOD * k) for i in range(STREAMS)]
    return out


def test_mappings_partition_each_input_template_on_its_stream_segment(tmp_path: Path) -> None:
    cfg_path = tmp_path / "c.toml"
    cfg_path.write_text(
        '[streams]\ninput = ["sensors/{stream}/value", "site/a/{stream}"]\n[cluster]\nenabled = true\npartitions = 7\n'
    )
    cfg = load_config(cfg_path)
    assert subject_mappings(cfg) == {
        "sensors.*.value": "part.{{partition(7,1)}}.sensors.{{wildcard(1)}}.value",
        "site.a.*": "part.{{partition(7,1)}}.site.a.{{wildcard(1)}}",
    }
    assert mappings_conf(cfg).startswith("mappings = {\n")


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ("partitions = 0", "cluster.partitions"),
        ("lease_ttl_s = 1.0\nheartbeat_s = 1.0", "cluster.lease_ttl_s"),
        ("duplicate_window_s = 20", "cluster.duplicate_window_s"),
        ('bucket = "a.b"', "cluster.bucket"),
        ("servers = []", "cluster.servers"),
        ("output_retention_s = 100", "cluster.output_retention_s"),
        ("[homeassistant]\nenabled = true", "homeassistant.enabled"),
        ('[streams]\ninput = "$share/g/sensors/{stream}/value"', "cluster.enabled"),
    ],
)
def test_bad_cluster_settings_name_the_key(tmp_path: Path, body: str, key: str) -> None:
    cfg_path = tmp_path / "c.toml"
    cfg_path.write_text(f"[cluster]\nenabled = true\n{body}\n")
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(cfg_path)


def test_partition_checkpoint_round_trip_continues_like_the_uninterrupted_pool() -> None:
    model = edge_gru.load(MODEL, backend="numpy")
    data = readings(range(30))
    first, rest = data[: 300 * 15], data[300 * 15 :]
    whole = model.pool(1000)
    whole.update_detailed([s for s, _, _ in first], [v for _, v, _ in first], [t for _, _, t in first], now=T0)
    ledger = Ledger(seq=4500, received=4500, published=1500, dropped=Counter(warmup=3000))
    blob = encode_checkpoint(whole, ledger, partition=3, member="m")
    restored = model.pool(1000)
    got = decode_checkpoint(blob, restored, where="test")
    assert got == ledger
    ids, values, ts = [s for s, _, _ in rest], [v for _, v, _ in rest], [t for _, _, t in rest]
    a = whole.update_detailed(ids, values, ts, now=T0)
    b = restored.update_detailed(ids, values, ts, now=T0)
    assert (a.status == Status.FORECAST).all()
    np.testing.assert_array_equal(a.forecasts, b.forecasts)
    with pytest.raises(CheckpointError, match="not an edge-gru partition checkpoint"):
        decode_checkpoint(b"garbage!", restored, where="bucket/ckpt.p3")


def test_nats_server_binary_comes_from_the_wheel_or_path() -> None:
    out = subprocess.run([nats_server_binary(), "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("nats-server: v2.")


class Members:
    """The ``edge-gru serve`` member processes of one test (harness daemons with a ``[cluster]``)."""

    def __init__(self, root: Path, servers: list[str], *, replicas: int = 3, idle_timeout_s: float = 86400) -> None:
        self.root = root
        self.sections = member_sections(servers, replicas=replicas, idle_timeout_s=idle_timeout_s)
        self.daemons: dict[str, Daemon] = {}

    def start(self, name: str) -> None:
        self.daemons[name] = Daemon(self.root / name, sections=self.sections, client_id=name, name=name).start()

    def log(self, name: str) -> str:
        return self.daemons[name].log_text()[-4000:]

    def signal(self, name: str, sig: int) -> None:
        self.daemons[name].signal(sig)

    def stop_all(self) -> dict[str, int | None]:
        """SIGTERM to all at once (each hands its partitions back), then their exit codes."""
        for d in self.daemons.values():
            if d.alive():
                d.signal(signal.SIGCONT)
                d.signal(signal.SIGTERM)
        codes: dict[str, int | None] = {}
        for name, d in self.daemons.items():
            try:
                codes[name] = d.wait(30)
            except subprocess.TimeoutExpired:
                d.kill()
                codes[name] = None
        return codes


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    c = NatsCluster(tmp_path / "nats", 3, mappings=mappings(tmp_path)).start()
    yield c
    c.stop()


async def member_stats(nc: Any, name: str) -> dict[str, Any] | None:
    try:
        r = await nc.request(f"edge-gru.{name}.control", b"stats", timeout=2)
    except Exception:
        return None
    return dict(json.loads(r.data))


async def balanced(nc: Any, names: list[str]) -> bool:
    """Every named member sees exactly these members, and they own every partition, evenly."""
    own = []
    for name in names:
        s = await member_stats(nc, name)
        if s is None or sorted(s["members"]) != sorted(names):
            return False
        own.append(s["partitions"])
    flat = sorted(p for ps in own for p in ps)
    return flat == list(range(PARTITIONS)) and all(len(ps) == PARTITIONS // len(names) for ps in own)


async def out_count(js: Any) -> int:
    try:
        return int((await js.stream_info("EDGE_GRU_OUT")).state.messages)
    except Exception:
        return -1


Reading = tuple[str, float, float]


def reference(
    phases: list[list[Reading]],
) -> tuple[dict[tuple[str, float], float], Counter[str], list[int]]:
    """One offline pool fed every phase in order: forecasts by (stream, ts), drops, forecasts after each phase."""
    ref_pool = edge_gru.load(MODEL, backend="numpy").pool(1000)
    expected: dict[tuple[str, float], float] = {}
    drops: Counter[str] = Counter()
    cumulative = []
    for rs in phases:
        r = ref_pool.update_detailed([s for s, _, _ in rs], [v for _, v, _ in rs], [t for _, _, t in rs], now=T0)
        for (s, _, t), st, y in zip(rs, r.status.tolist(), r.forecasts.tolist(), strict=True):
            if st == Status.FORECAST:
                expected[(s, t)] = y
            else:
                drops[Status(st).reason] += 1
        cumulative.append(len(expected))
    return expected, drops, cumulative


def worst_error(got: dict[tuple[str, float], float], expected: dict[tuple[str, float], float], rounds: int) -> float:
    """Largest |forecast - reference| as a fraction of the stream's range."""
    values = np.array([v for _, v, _ in readings(range(rounds))]).reshape(rounds, STREAMS)
    scale = dict(zip((f"s{i}" for i in range(STREAMS)), np.ptp(values, axis=0).tolist(), strict=True))
    return max(abs(got[k] - expected[k]) / scale[k[0]] for k in expected)


async def wait_until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 45.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)  # polling an observable, not a synchronisation point


def test_three_members_share_partitions_and_survive_a_killed_member_and_broker_node(
    cluster: NatsCluster, tmp_path: Path
) -> None:
    members = Members(tmp_path, cluster.urls)
    for name in ("m0", "m1", "m2"):
        members.start(name)
    try:
        asyncio.run(_scenario(cluster, members))
    finally:
        codes = members.stop_all()
    assert codes["m1"] == -signal.SIGKILL
    assert codes["m0"] == 0 and codes["m2"] == 0, (members.log("m0"), members.log("m2"))


async def _scenario(cluster: NatsCluster, members: Members) -> None:
    # The test's client connects to the nodes that stay up, so the kill does not blind it.
    nc = await nats.connect(servers=cluster.urls[:2], max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    js = nc.jetstream(timeout=3.0)

    await wait_until(lambda: balanced(nc, ["m0", "m1", "m2"]), "3 members to own 4 partitions each")

    async def feed(batch: list[tuple[str, bytes, str]]) -> None:
        """Publish each reading until JetStream acknowledges it; the id makes a retried one count once."""
        pending = batch
        while pending:
            futs = [
                await js.publish_async(f"sensors.{s}.value", payload, headers={"Nats-Msg-Id": mid})
                for s, payload, mid in pending
            ]
            res = await asyncio.gather(*(asyncio.wait_for(f, 5) for f in futs), return_exceptions=True)
            pending = [item for item, r in zip(pending, res, strict=True) if isinstance(r, BaseException)]

    def encoded(rs: list[tuple[str, float, float]]) -> list[tuple[str, bytes, str]]:
        return [(s, json.dumps({"value": v, "ts": t}).encode(), f"{s}@{t!r}") for s, v, t in rs]

    model = edge_gru.load(MODEL, backend="numpy")
    phases = [readings(range(0, 12)), readings(range(12, 18)), readings(range(18, 28))]
    expected, ref_drops, cumulative = reference(phases)

    # Phase 1: all members up; then every member checkpoints its partitions.
    await feed(encoded(phases[0]))
    await wait_until(lambda: _eq(out_count(js), cumulative[0]), "phase 1 forecasts")
    for name in ("m0", "m1", "m2"):
        reply = json.loads((await nc.request(f"edge-gru.{name}.control", b"checkpoint", timeout=10)).data)
        assert reply["ok"], reply

    # Phase 2: forecast by the members, after the checkpoint; then m1 and broker node n2 are SIGKILLed.
    await feed(encoded(phases[1]))
    await wait_until(lambda: _eq(out_count(js), cumulative[1]), "phase 2 forecasts")
    victim = await member_stats(nc, "m1")
    assert victim is not None
    victim_parts = set(victim["partitions"])
    members.signal("m1", signal.SIGKILL)
    cluster.nodes[2].kill()

    # Phase 3, with three bad payloads that must end as named drops.
    bad = [("s7", b"", "bad-0"), ("s8", b"{not json", "bad-1"), ("s9", b'{"value": "warm"}', "bad-2")]
    await feed(encoded(phases[2]) + bad)
    await wait_until(lambda: balanced(nc, ["m0", "m2"]), "the survivors to own 6 partitions each", timeout=60)
    await wait_until(lambda: _eq(out_count(js), cumulative[2]), "every forecast", timeout=60)

    # Final ledgers: checkpoint now and read every partition's checkpoint from the cluster.
    for name in ("m0", "m2"):
        reply = json.loads((await nc.request(f"edge-gru.{name}.control", b"checkpoint", timeout=10)).data)
        assert reply["ok"], reply
    kv = await js.key_value("edge-gru")
    ledgers = {}
    for n in range(PARTITIONS):
        blob = (await kv.get(f"ckpt.p{n}")).value
        ledgers[n] = decode_checkpoint(blob, model.pool(1000), where=f"ckpt.p{n}")

    # Stream affinity: each stream's readings were all mapped to one partition.
    info = await js.stream_info("EDGE_GRU_IN", subjects_filter="part.>")
    per_stream: dict[str, list[tuple[int, int]]] = {}
    for subject, count in (info.state.subjects or {}).items():
        _, p, _, stream, _ = subject.split(".")
        per_stream.setdefault(stream, []).append((int(p), count))
    assert len(per_stream) == STREAMS
    for stream, where in per_stream.items():
        assert len(where) == 1, f"{stream} landed in partitions {where}"
        assert where[0][1] == 28 + sum(s == stream for s, _, _ in bad)
    by_partition = Counter()
    for where in per_stream.values():
        by_partition[where[0][0]] += where[0][1]

    # Every reading ends as exactly one forecast or one named drop, per partition.
    for n, ledger in ledgers.items():
        assert ledger.received == by_partition[n], (n, ledger)
        assert ledger.received == ledger.published + sum(ledger.dropped.values()), (n, ledger)
    total = Counter()
    for ledger in ledgers.values():
        total.update(ledger.dropped)
    assert sum(ledger.published for ledger in ledgers.values()) == len(expected)
    assert total == ref_drops + Counter(empty=1, bad_json=1, not_a_number=1), total
    # m1's partitions were replayed from the phase-1 checkpoint: its phase-2 forecasts were recomputed
    # and recognised as already published, not stored twice.
    victim_phase2 = sum(1 for s, _, t in phases[1] if (s, t) in expected and per_stream[s][0][0] in victim_parts)
    assert sum(ledgers[n].duplicates for n in victim_parts) >= victim_phase2 > 0

    # The forecasts: one per (stream, ts), equal to the offline pool's.
    sub = await js.pull_subscribe(
        "predictions.>", stream="EDGE_GRU_OUT", config=nats.js.api.ConsumerConfig(ack_policy=nats.js.api.AckPolicy.NONE)
    )
    got: dict[tuple[str, float], float] = {}
    while len(got) < len(expected):
        for m in await sub.fetch(1000, timeout=5):
            d = json.loads(m.data)
            key = (d["stream"], d["ts"])
            assert key not in got, f"forecast {key} stored twice"
            assert m.subject == f"predictions.{d['stream']}"
            got[key] = d["value"]
    assert got.keys() == expected.keys()
    assert worst_error(got, expected, 28) <= 1e-5
    await nc.close()


async def _eq(value: Awaitable[int], target: int) -> bool:
    got = await value
    if got > target:
        raise AssertionError(f"{got} forecasts stored, only {target} expected")
    return got == target


def test_assignment_is_balanced_and_a_leaving_member_moves_few_partitions() -> None:
    from edge_gru.daemon.cluster import assign

    rng = np.random.default_rng(3)
    moved = kept = 0
    for _ in range(100):
        names = [f"n{int(x)}" for x in rng.integers(0, 10**9, 4)]
        before = assign(12, names)
        assert before == assign(12, list(reversed(names)))  # every member computes the same
        assert sorted(p for ps in before.values() for p in ps) == list(range(12))
        assert all(len(ps) == 3 for ps in before.values())
        gone = names[int(rng.integers(0, 4))]
        after = assign(12, [n for n in names if n != gone])
        assert all(len(ps) == 4 for ps in after.values())
        assert before[gone] <= set().union(*after.values())
        for n in after:
            moved += len(before[n] - after[n])
            kept += len(before[n] & after[n])
    # round-robin (p % N) would move about two thirds of the survivors' partitions
    assert moved < 0.25 * (moved + kept)


def test_mqtt_sensors_and_a_joining_member_take_over_partitions_with_their_state(tmp_path: Path) -> None:
    """Sensors publish MQTT 3.1.1 to the NATS server; the first member reloads its bundle (SIGHUP),
    then a second member joins mid-stream and takes half the partitions from the checkpoints the
    first hands over: forecasts still equal one pool, and none is computed twice (a clean
    handover replays nothing)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    cluster = NatsCluster(tmp_path / "nats", 1, mappings=mappings(tmp_path), mqtt=True).start()
    members = Members(tmp_path, cluster.urls, replicas=1)
    node = cluster.nodes[0]
    assert node.mqtt_port is not None
    received: list[bytes] = []
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="dashboard", protocol=mqtt.MQTTv311)
    sub.on_message = lambda c, u, msg: received.append(msg.payload)
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="sensors", protocol=mqtt.MQTTv311)
    pub.max_inflight_messages_set(100)

    def publish(rs: list[tuple[str, float, float]]) -> None:
        infos = [pub.publish(f"sensors/{s}/value", json.dumps({"value": v, "ts": t}), qos=1) for s, v, t in rs]
        for info in infos:
            info.wait_for_publish(30)
            assert info.is_published(), "the NATS MQTT listener did not acknowledge a reading"

    async def scenario() -> None:
        nc = await nats.connect(servers=cluster.urls)
        js = nc.jetstream(timeout=3.0)
        members.start("m0")
        await wait_until(lambda: balanced(nc, ["m0"]), "m0 to own every partition")
        done = threading.Event()
        sub.on_subscribe = lambda c, u, mid, rc, p: done.set()
        sub.connect("127.0.0.1", node.mqtt_port)
        sub.loop_start()
        sub.subscribe("predictions/+", qos=1)
        await asyncio.get_running_loop().run_in_executor(None, done.wait, 10)
        pub.connect("127.0.0.1", node.mqtt_port)
        pub.loop_start()
        phases = [readings(range(0, 15)), readings(range(15, 25))]
        expected, _, cumulative = reference(phases)
        await asyncio.get_running_loop().run_in_executor(None, publish, phases[0])
        await wait_until(lambda: _eq(out_count(js), cumulative[0]), "forecasts of the first member")
        # systemctl reload: the same bundle again keeps every stream's state (the forecasts below tell)
        members.signal("m0", signal.SIGHUP)

        async def reloaded() -> bool:
            return bool(members.daemons["m0"].events("model_reloaded"))

        await wait_until(reloaded, "m0 to reload its bundle")
        members.start("m1")
        await wait_until(lambda: balanced(nc, ["m0", "m1"]), "m1 to take half the partitions")
        await asyncio.get_running_loop().run_in_executor(None, publish, phases[1])
        await wait_until(lambda: _eq(out_count(js), cumulative[1]), "forecasts of both members")
        stats = [await member_stats(nc, n) for n in ("m0", "m1")]
        assert all(s is not None and s["duplicates"] == 0 for s in stats), stats
        assert stats[1] is not None and stats[1]["takeovers"] == PARTITIONS // 2
        consumer = await js.pull_subscribe(
            "predictions.>",
            stream="EDGE_GRU_OUT",
            config=nats.js.api.ConsumerConfig(ack_policy=nats.js.api.AckPolicy.NONE),
        )
        got: dict[tuple[str, float], float] = {}
        while len(got) < len(expected):
            for m in await consumer.fetch(1000, timeout=5):
                d = json.loads(m.data)
                got[(d["stream"], d["ts"])] = d["value"]
        assert got.keys() == expected.keys()
        assert worst_error(got, expected, 25) <= 1e-5
        # The MQTT dashboard got the same forecasts on predictions/<stream>.
        deadline = time.monotonic() + 20
        while len(received) < len(expected) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)  # polling what the subscriber has received
        mqtt_got = {(d["stream"], d["ts"]) for d in map(json.loads, received)}
        assert mqtt_got == expected.keys()
        await nc.close()

    try:
        asyncio.run(scenario())
    finally:
        codes = members.stop_all()
        for c in (sub, pub):
            c.disconnect()
            c.loop_stop()
        cluster.stop()
    assert codes == {"m0": 0, "m1": 0}, (members.log("m0"), members.log("m1"))


def test_a_suspended_member_loses_its_partitions_and_publishes_nothing_twice(tmp_path: Path) -> None:
    """A member frozen past its leases (SIGSTOP: a swapped-out VM, a stuck disk) comes back to find
    its partitions taken over: it must drop them rather than serve them from stale state, then
    rejoin and get its share back through a clean handover."""
    cluster = NatsCluster(tmp_path / "nats", 1, mappings=mappings(tmp_path))
    members = Members(tmp_path, cluster.urls, replicas=1)

    async def scenario() -> None:
        # A member started before any server is up keeps trying instead of exiting.
        members.start("m0")

        async def connect_failed() -> bool:
            return bool(members.daemons["m0"].events("nats_error"))

        await wait_until(connect_failed, "m0 to report the unreachable servers")
        cluster.start()
        nc = await nats.connect(servers=cluster.urls)
        js = nc.jetstream(timeout=3.0)

        async def feed(rs: list[Reading]) -> None:
            futs = [
                await js.publish_async(f"sensors.{s}.value", json.dumps({"value": v, "ts": t}).encode())
                for s, v, t in rs
            ]
            await asyncio.gather(*futs)

        members.start("m1")
        await wait_until(lambda: balanced(nc, ["m0", "m1"]), "m0 and m1 to share the partitions")
        phases = [readings(range(0, 12)), readings(range(12, 18)), readings(range(18, 24))]
        expected, _, cumulative = reference(phases)
        await feed(phases[0])
        await wait_until(lambda: _eq(out_count(js), cumulative[0]), "phase 1 forecasts")
        before = await member_stats(nc, "m0")
        assert before is not None
        members.signal("m0", signal.SIGSTOP)
        await feed(phases[1])
        await wait_until(lambda: balanced(nc, ["m1"]), "m1 to take over every partition")
        await wait_until(lambda: _eq(out_count(js), cumulative[1]), "phase 2 forecasts, all from m1")
        members.signal("m0", signal.SIGCONT)
        await wait_until(lambda: balanced(nc, ["m0", "m1"]), "m0 to rejoin and get its share back")
        after = await member_stats(nc, "m0")
        assert after is not None and after["lost"] == len(before["partitions"]), after
        await feed(phases[2])
        await wait_until(lambda: _eq(out_count(js), cumulative[2]), "phase 3 forecasts")
        no_ack = nats.js.api.ConsumerConfig(ack_policy=nats.js.api.AckPolicy.NONE)
        consumer = await js.pull_subscribe("predictions.>", stream="EDGE_GRU_OUT", config=no_ack)
        got: dict[tuple[str, float], float] = {}
        while len(got) < len(expected):
            for m in await consumer.fetch(1000, timeout=5):
                d = json.loads(m.data)
                assert (d["stream"], d["ts"]) not in got
                got[(d["stream"], d["ts"])] = d["value"]
        assert got.keys() == expected.keys()
        assert worst_error(got, expected, 24) <= 1e-5
        await nc.close()

    try:
        asyncio.run(scenario())
    finally:
        codes = members.stop_all()
        cluster.stop()
    assert codes == {"m0": 0, "m1": 0}, (members.log("m0"), members.log("m1"))


def test_idle_streams_expire_in_every_partition(tmp_path: Path) -> None:
    cluster = NatsCluster(tmp_path / "nats", 1, mappings=mappings(tmp_path)).start()
    members = Members(tmp_path, cluster.urls, replicas=1, idle_timeout_s=1.0)

    async def scenario() -> None:
        nc = await nats.connect(servers=cluster.urls)
        js = nc.jetstream(timeout=3.0)
        members.start("m0")
        await wait_until(lambda: balanced(nc, ["m0"]), "m0 to own every partition")
        futs = [
            await js.publish_async(f"sensors.{s}.value", json.dumps({"value": v, "ts": t}).encode())
            for s, v, t in readings(range(1))
        ]
        await asyncio.gather(*futs)

        async def expired() -> bool:
            s = await member_stats(nc, "m0")
            return s is not None and s["received"] == STREAMS and s["streams"] == 0 and s["expired"] == STREAMS

        await wait_until(expired, "every stream to be forgotten after a second without readings")
        await nc.close()

    try:
        asyncio.run(scenario())
    finally:
        codes = members.stop_all()
        cluster.stop()
    assert codes == {"m0": 0}, members.log("m0")


def test_a_member_without_servers_keeps_trying_and_stops_cleanly(tmp_path: Path) -> None:
    members = Members(tmp_path, [f"nats://127.0.0.1:{free_port()}"])
    members.start("m0")
    members.daemons["m0"].wait_log("nats_error", timeout=30)
    assert members.daemons["m0"].alive()
    assert members.stop_all() == {"m0": 0}, members.log("m0")
