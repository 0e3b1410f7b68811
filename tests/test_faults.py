"""Fault injection against real processes: broker kills, SIGKILL mid-checkpoint, a read-only or
full state directory, clock jumps, and 100,000 stream ids through a 1,000-stream pool.

Each test runs the real ``edge-gru serve`` (or the real checkpoint code in a subprocess)
and checks that the daemon keeps serving, that its counters still add up, and that what is
on disk is always a whole checkpoint.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

import edge_gru
from edge_gru.daemon.checkpoint import Checkpointer
from edge_gru.daemon.config import StreamsConfig
from edge_gru.daemon.worker import Worker
from edge_gru.harness import DEFAULT_MODEL, Broker, Daemon, Publisher, Watcher, accounted

WARMUP = edge_gru.load(DEFAULT_MODEL, backend="numpy").manifest.warmup


def reading(value: float, ts: float) -> bytes:
    return json.dumps({"value": value, "ts": ts}).encode()


def series_messages(streams: list[str], start: int, n: int) -> list[tuple[str, bytes]]:
    return [
        (f"sensors/{s}/value", reading(20 + 2 * np.sin(k / 4 + j), 1_700_000_000.0 + 60 * k))
        for k in range(start, start + n)
        for j, s in enumerate(streams)
    ]


# -- the broker dies ---------------------------------------------------------------------------------


def test_broker_killed_and_restarted_repeatedly(private_broker: Broker, tmp_path: Path) -> None:
    """SIGKILL the broker three times while sensors publish: the daemon reconnects each time and keeps serving."""
    daemon = Daemon(tmp_path / "d", broker=private_broker).start()
    stop = threading.Event()
    sent = [0]

    def sensors() -> None:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="faulty-sensors")
        client.reconnect_delay_set(1, 1)
        client.connect_async(private_broker.host, private_broker.port)
        client.loop_start()
        k = 0
        while not stop.is_set():
            for s in range(10):
                client.publish(f"sensors/bg{s}/value", reading(20 + np.sin(k / 5 + s), 1_700_000_000.0 + 60 * k), qos=1)
            sent[0] += 10
            k += 1
            time.sleep(0.02)
        client.disconnect()
        client.loop_stop()

    thread = threading.Thread(target=sensors, daemon=True)
    try:
        daemon.wait_ready()
        thread.start()
        kills = 3
        for _ in range(kills):
            time.sleep(1.0)
            private_broker.stop(kill=True)
            time.sleep(0.5)
            assert daemon.alive(), daemon.log_text()[-3000:]
            private_broker.start()
            daemon.wait_ready(30)
        stop.set()
        thread.join(10)
        # new streams after the last restart are served normally
        watcher = Watcher(private_broker.host, private_broker.port, ["predictions/new/#", "edge-gru/#"])
        pub = Publisher(private_broker.host, private_broker.port)
        msgs = [
            (f"sensors/n{s}/value", reading(20.0 + k % 3, 1_700_000_000.0 + 60 * k))
            for k in range(WARMUP + 4)
            for s in range(5)
        ]
        pub.publish_all(msgs)
        pub.close()
        snap = watcher.wait_stats(
            daemon, lambda s: s["queued"] == 0 and s["streams"] == 15, 30, "the new streams processed"
        )
        assert snap["reconnects"] == kills
        assert accounted(snap), snap
        assert 0 < snap["received"] <= sent[0] + len(msgs)  # the broker lost what it had not persisted
        assert len(daemon.events("mqtt_connection_lost")) == kills
        watcher.close()
        got = Watcher(private_broker.host, private_broker.port, ["predictions/#"])
        pub = Publisher(private_broker.host, private_broker.port)
        pub.publish_all([(f"sensors/n{s}/value", reading(21.0, 1_700_000_000.0 + 60 * (WARMUP + 4))) for s in range(5)])
        pub.close()
        got.wait_for(lambda: len(got.on("predictions/#")) >= 5, 30, "forecasts of the new streams")
        got.close()
    finally:
        stop.set()
        assert daemon.stop() == 0, daemon.log_text()[-3000:]


# -- SIGKILL mid-checkpoint ------------------------------------------------------------------------

SAVER = textwrap.dedent(
    """
    import sys
    import numpy as np
    import edge_gru
    from edge_gru.daemon.checkpoint import Checkpointer

    path, n = sys.argv[1], int(sys.argv[2])
    model = edge_gru.load(sys.argv[3], backend="numpy")
    pool = model.pool(n)
    ids = [f"s{i}" for i in range(n)]
    cp = Checkpointer(path)
    g = 0
    while True:
        g += 1
        pool.update(ids, np.sin(np.arange(n) + g) * 5 + 20, np.full(n, 1000.0 + 60 * g))
        print("saving", g, flush=True)
        cp.save(pool)
        print("saved", g, flush=True)
    """
)


def next_forecasts(pool: edge_gru.StreamPool, n: int, g: int) -> np.ndarray:
    """Forecasts after one more reading: equal for two pools exactly when their states are equal."""
    return pool.update([f"s{i}" for i in range(n)], np.cos(np.arange(n)) + 20, np.full(n, 1000.0 + 60 * (g + 1)))


def test_sigkill_during_checkpoints_leaves_the_old_or_the_new_file(tmp_path: Path) -> None:
    """Kill a loop of saves of a large pool at random moments: the file always loads and is a saved generation."""
    n = 20_000
    path = tmp_path / "state" / "node.checkpoint.npz"
    rng = random.Random(1234)
    seen: list[int] = []
    found: dict[int, np.ndarray] = {}
    outcomes = []
    for attempt in range(8):
        proc = subprocess.Popen(
            [sys.executable, "-c", SAVER, str(path), str(n), str(DEFAULT_MODEL)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        lines: list[str] = []
        if attempt % 2:
            # aimed: a save of generation 2 has just begun (the file already holds generation 1)
            while not lines or lines[-1] != "saving 2":
                lines.append(proc.stdout.readline().strip())
            time.sleep(rng.uniform(0.0, 0.06))
        else:  # anywhere in the loop of updates and saves
            lines.append(proc.stdout.readline().strip())
            time.sleep(rng.uniform(0.0, 1.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        lines += [x.strip() for x in proc.stdout.read().splitlines()]
        saved = [int(x.split()[1]) for x in lines if x.startswith("saved")]
        saving = [int(x.split()[1]) for x in lines if x.startswith("saving")]
        assert path.exists() or (attempt == 0 and not saved)
        if not path.exists():
            continue
        model = edge_gru.load(DEFAULT_MODEL, backend="numpy")
        restored = model.pool(n)
        assert Checkpointer(path).restore(restored), f"attempt {attempt}: checkpoint did not load"
        gens = {int(c) for c in np.unique(restored.count[: len(restored)])}
        assert len(gens) == 1, f"attempt {attempt}: a torn checkpoint mixes generations {gens}"
        g = gens.pop()
        # the file is the last completed save of this run, the one in progress, or (nothing saved
        # in this run) the previous run's file
        allowed = {max(saved, default=0), max(saving, default=0)} | ({seen[-1]} if seen and not saved else set())
        assert g in allowed, (attempt, g, allowed)
        seen.append(g)
        found.setdefault(g, next_forecasts(restored, n, g))
        outcomes.append((attempt, g, len(saved)))
    assert len(seen) >= 6, outcomes
    # each generation found on disk equals the pool after that many updates, bit for bit
    model = edge_gru.load(DEFAULT_MODEL, backend="numpy")
    ids = [f"s{i}" for i in range(n)]
    ref = model.pool(n)
    for g in range(1, max(found) + 1):
        ref.update(ids, np.sin(np.arange(n) + g) * 5 + 20, np.full(n, 1000.0 + 60 * g))
        if g in found:
            copy_path = tmp_path / "ref.npz"
            ref.save(copy_path)
            copy = model.pool(n)
            copy.load(copy_path)
            np.testing.assert_array_equal(found[g], next_forecasts(copy, n, g))


def test_sigkill_mid_checkpoint_leaves_no_stale_temp_files_after_restart(tmp_path: Path) -> None:
    """Temporary files of interrupted saves are removed when the daemon restores its state."""
    n = 20_000
    path = tmp_path / "state" / "node.checkpoint.npz"
    for delay in (0.0, 0.01, 0.02):
        proc = subprocess.Popen(
            [sys.executable, "-c", SAVER, str(path), str(n), str(DEFAULT_MODEL)], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None
        while proc.stdout.readline().strip() != "saving 2":
            pass
        time.sleep(delay)  # inside the save of generation 2
        proc.kill()
        proc.wait()
    # what a kill between the temporary file's creation and its rename leaves (the window is a few ms
    # of write and fsync, so the loop above only sometimes hits it): a torn temporary file
    torn = path.parent / f".{path.name}.k1ll3d.tmp"
    torn.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    model = edge_gru.load(DEFAULT_MODEL, backend="numpy")
    pool = model.pool(n)
    assert Checkpointer(path).restore(pool) and len(pool) == n
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def test_daemon_sigkilled_while_checkpointing_restores_on_restart(private_broker: Broker, tmp_path: Path) -> None:
    streams = [f"k{i}" for i in range(300)]
    daemon = Daemon(
        tmp_path / "d",
        broker=private_broker,
        sections={"state": {"checkpoint_interval_s": 0.05}},
    ).start()
    daemon.wait_ready()
    pub = Publisher(private_broker.host, private_broker.port)
    pub.publish_all(series_messages(streams, 0, WARMUP + 2))
    watcher = Watcher(private_broker.host, private_broker.port, ["predictions/#", "edge-gru/#"])
    watcher.wait_stats(daemon, lambda s: s["queued"] == 0 and s["streams"] == len(streams), 30, "all streams in")
    time.sleep(random.uniform(0.0, 0.3))  # checkpoints run every 50 ms: the kill lands in or near one
    daemon.kill()
    assert daemon.checkpoint_path.exists()
    daemon.start()
    daemon.wait_ready()
    assert daemon.events("checkpoint_restored"), daemon.log_text()[-3000:]
    assert not daemon.events("checkpoint_discarded") and not daemon.events("checkpoint_unreadable")
    # restored streams are warm: their next reading is forecast at once
    pub.publish_all(series_messages(streams[:20], WARMUP + 2, 1))
    watcher.wait_for(lambda: len(watcher.on("predictions/#")) >= 20, 30, "forecasts from restored streams")
    pub.close()
    watcher.close()
    assert daemon.stop() == 0


# -- the state directory is read-only or full ------------------------------------------------------


def _mount_tmpfs(where: Path, *, size: str, readonly: bool = False) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if readonly else "")
    try:
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(where)], capture_output=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def _umount(where: Path) -> None:
    subprocess.run(["umount", "-l", str(where)], capture_output=True, timeout=10)


def _serves_and_warns(private_broker: Broker, daemon: Daemon, streams: list[str]) -> dict:
    watcher = Watcher(private_broker.host, private_broker.port, ["predictions/#", "edge-gru/#"])
    pub = Publisher(private_broker.host, private_broker.port)
    try:
        daemon.wait_ready()
        pub.publish_all(series_messages(streams, 0, WARMUP + 4))
        want = len(streams) * 5
        watcher.wait_for(lambda: len(watcher.on("predictions/#")) >= want, 30, "forecasts with a failing state dir")
        daemon.wait_log("checkpoint_failed", 30)
        snap = watcher.wait_stats(daemon, lambda s: s["checkpoint_failures"] >= 2, 30, "repeated checkpoint failures")
        assert accounted(snap) and snap["published"] == want, snap
        assert len(daemon.events("checkpoint_failed")) == 1  # warned once per failure streak, not every time
        return snap
    finally:
        pub.close()
        watcher.close()


@pytest.mark.parametrize("how", ["read_only_mount", "not_a_directory"])
def test_read_only_state_dir_warns_and_keeps_serving(private_broker: Broker, tmp_path: Path, how: str) -> None:
    state = tmp_path / "state"
    if how == "read_only_mount":
        if os.geteuid() == 0:
            if not _mount_tmpfs(state, size="1m", readonly=True):
                pytest.skip("mount is not permitted here; the not_a_directory case covers an unwritable state dir")
        else:
            state.mkdir()
            state.chmod(0o555)
    else:
        (tmp_path / "file").write_text("x")
        state = tmp_path / "file" / "state"  # mkdir and writes fail with ENOTDIR, even for root
    daemon = Daemon(
        tmp_path / "d",
        broker=private_broker,
        sections={"state": {"dir": str(state), "checkpoint_interval_s": 0.2}},
    ).start()
    try:
        _serves_and_warns(private_broker, daemon, ["r1", "r2", "r3"])
        line = daemon.events("checkpoint_failed")[0]
        assert "serving continues" in line
    finally:
        rc = daemon.stop()
        if how == "read_only_mount" and os.geteuid() == 0:
            _umount(state)
    assert rc == 0, daemon.log_text()[-3000:]


def test_full_state_dir_by_file_size_limit_warns_and_keeps_serving(private_broker: Broker, tmp_path: Path) -> None:
    """RLIMIT_FSIZE on the daemon: every checkpoint write fails with EFBIG (works without root)."""
    daemon = Daemon(
        tmp_path / "d",
        broker=private_broker,
        sections={"state": {"checkpoint_interval_s": 0.2}},
        fsize_limit=4096,
    ).start()
    try:
        _serves_and_warns(private_broker, daemon, [f"f{i}" for i in range(20)])
        assert not daemon.checkpoint_path.exists()
        assert not list(daemon.checkpoint_path.parent.glob(".*.tmp")), "a failed save left its temporary file"
    finally:
        rc = daemon.stop()
    assert rc == 0, daemon.log_text()[-3000:]


def test_full_tmpfs_keeps_the_old_checkpoint_and_recovers(private_broker: Broker, tmp_path: Path) -> None:
    """A tiny tmpfs fills up: saves fail (old checkpoint intact), and succeed again once space is freed."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; the RLIMIT_FSIZE test covers a full disk")
    state = tmp_path / "state"
    if not _mount_tmpfs(state, size="256k"):
        pytest.skip("mount is not permitted here; the RLIMIT_FSIZE test covers a full disk")
    daemon = Daemon(
        tmp_path / "d",
        broker=private_broker,
        sections={"state": {"dir": str(state), "checkpoint_interval_s": 0.2}},
    ).start()
    watcher = Watcher(private_broker.host, private_broker.port, ["predictions/#", "edge-gru/#"])
    pub = Publisher(private_broker.host, private_broker.port)
    try:
        daemon.wait_ready()
        pub.publish_all(series_messages(["t0"], 0, WARMUP + 1))
        watcher.wait_stats(daemon, lambda s: s["checkpoints"] >= 1, 30, "a first checkpoint")
        old = daemon.checkpoint_path.read_bytes()
        filler = state / "filler"
        with open(filler, "wb", buffering=0) as fh:  # fill the file system
            try:
                while True:
                    fh.write(b"\0" * 4096)
                    fh.flush()
            except OSError:
                pass
        # many more streams make the next checkpoint larger than what is left
        pub.publish_all(series_messages([f"t{i}" for i in range(1, 400)], 0, 2))
        daemon.wait_log("checkpoint_failed", 30)
        watcher.wait_stats(daemon, lambda s: s["checkpoint_failures"] >= 1, 30, "the failure counted")
        edge_gru.load(DEFAULT_MODEL, backend="numpy").pool(1000).load(daemon.checkpoint_path)  # still whole
        assert daemon.checkpoint_path.read_bytes() == old
        filler.unlink()
        daemon.wait_log("checkpoint_recovered", 30)
        restored = edge_gru.load(DEFAULT_MODEL, backend="numpy").pool(1000)
        restored.load(daemon.checkpoint_path)
        assert len(restored) == 400
    finally:
        pub.close()
        watcher.close()
        rc = daemon.stop()
        _umount(state)
    assert rc == 0


# -- clock jumps -----------------------------------------------------------------------------------


def test_reading_clock_jumps_back_and_forward(private_broker: Broker, tmp_path: Path) -> None:
    """A sensor clock that jumps back: out_of_order drops until it passes the last ts; forward: one gap reset."""
    daemon = Daemon(tmp_path / "d", broker=private_broker).start()
    watcher = Watcher(private_broker.host, private_broker.port, ["predictions/#", "edge-gru/#"])
    pub = Publisher(private_broker.host, private_broker.port)
    try:
        daemon.wait_ready()
        t = 1_700_000_000.0
        n0 = WARMUP + 5
        msgs = [("sensors/clk/value", reading(20 + k % 3, t + 60 * k)) for k in range(n0)]
        last = t + 60 * (n0 - 1)
        # back by an hour: 3 readings still older than the last one, then it catches up
        back = [("sensors/clk/value", reading(21.0, last - 3600 + 60 * k)) for k in range(3)]
        # NTP fixes it: readings continue after the last accepted ts
        resume = [("sensors/clk/value", reading(20 + k % 3, last + 60 * (k + 1))) for k in range(3)]
        # forward by a day: the state is reset and the stream warms up again
        fwd0 = last + 60 * 3 + 86_400
        forward = [("sensors/clk/value", reading(20 + k % 3, fwd0 + 60 * k)) for k in range(WARMUP + 2)]
        pub.publish_all(msgs + back + resume + forward)
        total = len(msgs) + len(back) + len(resume) + len(forward)
        snap = watcher.wait_stats(
            daemon, lambda s: s["received"] >= total and s["queued"] == 0, 30, "the clock-jump readings"
        )
        assert accounted(snap), snap
        assert snap["dropped"]["out_of_order"] == 3
        assert snap["gap_resets"] == 1
        assert snap["dropped"]["warmup"] == 2 * (WARMUP - 1)
        assert snap["published"] == (n0 - WARMUP + 1) + 3 + 3
        # every forecast is dated after the reading it follows, none during the backward jump
        docs = [json.loads(p) for p in watcher.on("predictions/#")]
        assert all(d["forecast_ts"] is None or d["forecast_ts"] > d["ts"] for d in docs)
        assert not any(last - 3600 <= d["ts"] < last for d in docs[n0 - WARMUP + 1 :])
    finally:
        pub.close()
        watcher.close()
        assert daemon.stop() == 0


class _Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_daemon_clock_jumps_do_not_expire_or_break_streams() -> None:
    """The daemon's own clock jumping back (NTP step) expires nothing; jumping forward expires idle streams once."""
    model = edge_gru.load(DEFAULT_MODEL, backend="numpy")
    clock = _Clock(1_000_000.0)

    class Kept:
        n = 0

        def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
            self.n += 1

    worker = Worker(
        model=model,
        publisher=Kept(),
        settings=StreamsConfig(input=("s/{stream}",), output="p/{stream}", idle_timeout_s=600.0),
        clock=clock,
    )
    for k in range(WARMUP + 2):
        for s in ("a", "b"):
            worker.submit(f"s/{s}", reading(20.0 + k % 2, 5000.0 + 60 * k))
        clock.t += 60
    while worker.process_available():
        pass
    clock.t -= 86_400  # back a day
    assert worker.expire_idle() == []
    worker.submit("s/a", reading(20.0, 5000.0 + 60 * (WARMUP + 2)))
    worker.process_available()
    assert len(worker.pool) == 2
    clock.t += 2 * 86_400  # forward two days: both idle for longer than 600 s
    assert sorted(worker.expire_idle()) == ["a", "b"]
    assert len(worker.pool) == 0
    snap = worker.snapshot()
    assert snap["expired"] == 2 and accounted(snap)
    # the latency of a reading whose receive time is later than the publish time is never negative
    assert snap["latency"]["p50_ms"] is None or snap["latency"]["p50_ms"] >= 0


# -- 100,000 stream ids through a 1,000-stream pool ------------------------------------------------


def test_100k_stream_ids_with_a_1000_stream_limit_stay_bounded(private_broker: Broker, tmp_path: Path) -> None:
    total, limit, wave = 100_000, 1_000, 1_000
    daemon = Daemon(
        tmp_path / "d",
        broker=private_broker,
        sections={"streams": {"max_streams": limit, "idle_timeout_s": 0.15, "batch_size": 1024}},
    ).start()
    watcher = Watcher(private_broker.host, private_broker.port, ["edge-gru/#"])
    pub = Publisher(private_broker.host, private_broker.port)
    rss: list[int] = []
    try:
        daemon.wait_ready()
        for w in range(total // wave):
            msgs = [(f"sensors/id{w * wave + i:06d}/value", b"21.5") for i in range(wave)]
            pub.publish_all(msgs)
            time.sleep(0.2)  # the wave goes idle; the next one takes its slots
            if w in (10, total // wave - 1):
                rss.append(daemon.rss_bytes())
        snap = watcher.wait_stats(
            daemon, lambda s: s["received"] >= total and s["queued"] == 0, 60, "all stream ids processed"
        )
    finally:
        pub.close()
    streams_seen = [json.loads(p)["streams"] for p in watcher.on(daemon.stats_topic)]
    watcher.close()
    assert daemon.stop() == 0
    assert snap["received"] == total and accounted(snap), snap
    assert max(streams_seen) <= limit
    created = snap["dropped"].get("warmup", 0)  # one reading per id: every accepted id is still warming up
    assert created + snap["dropped"].get("stream_limit", 0) == total, snap["dropped"]
    assert snap["expired"] + snap["streams"] == created  # every stream created was expired or is still there
    assert snap["expired"] >= 0.9 * total, snap  # the oldest idle streams made room
    growth_mib = (rss[-1] - rss[0]) / 2**20
    assert growth_mib < 8, f"RSS grew by {growth_mib:.1f} MiB over 90,000 more stream ids"
