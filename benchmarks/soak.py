"""Soak: the simulator drives a real ``edge-gru serve`` through a private mosquitto, with faults, for a while.

    python benchmarks/soak.py --duration 600 --rate 200 [--streams 50] [--faults all]
        [--broker-restarts 2] [--daemon-restarts 2] [--backend auto] [--json out.json]

Loopback only and bounded in time. The simulator's seeded streams with its counted faults
(NaN, garbage payloads, duplicates, out-of-order, gaps, clock jumps, spikes, ...) are
published at a steady rate with QoS 1 to a mosquitto this script starts; the daemon runs
as a subprocess exactly as systemd runs it. Mid-run the broker is restarted (sensors pause
while it is down) and the daemon is restarted with SIGTERM (sensors keep publishing; the
broker holds their readings for the daemon's persistent session).

At the end every reading is accounted for: the readings the broker acknowledged must equal
the sum over the daemon's runs of ``received``; each run must satisfy ``received ==
published + sum(dropped)``; the drops for injected faults (not_finite, duplicate,
out_of_order, each garbage payload's reason) must equal what the simulator injected; and
the forecasts a subscriber saw must equal ``published``. Prints readings sent, forecasts,
drops by reason, reconnects, restarts, the daemon's RSS at start and end, and latency
p50/p99 over time. Exit status 1 when anything is unaccounted.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from edge_gru.harness import DEFAULT_MODEL, Broker, Daemon, Publisher, Watcher

PERIOD_S = 300.0  # the simulated sensors' sample period (their payload timestamps); sending is paced by --rate
INPUT = "sensors/{stream}/value"
OUTPUT = "predictions/{stream}"


class Collector:
    """Forecasts and stats as a subscriber sees them, on a persistent session that survives broker restarts."""

    def __init__(self, host: str, port: int, stats_topic: str) -> None:
        self.stats_topic = stats_topic
        self.lock = threading.Lock()
        self.first_seen: dict[tuple[str, float], float] = {}
        self.duplicates = 0
        self.stats: list[tuple[float, dict[str, Any]]] = []
        self.watcher = Watcher(
            host,
            port,
            [OUTPUT.replace("{stream}", "+"), stats_topic],
            client_id=f"soak-watch-{uuid.uuid4().hex[:8]}",
            clean_session=False,
            handler=self._on_message,
            record=False,
            max_inflight=1000,
        )

    @property
    def connects(self) -> int:
        return self.watcher.connects

    def _on_message(self, topic: str, payload: bytes, retain: bool) -> None:
        now = time.time()
        doc = json.loads(payload)
        with self.lock:
            if topic == self.stats_topic:
                self.stats.append((now, doc))
                return
            key = (doc["stream"], float(doc["ts"]))
            if key in self.first_seen:
                self.duplicates += 1  # a QoS 1 redelivery after a reconnect
            else:
                self.first_seen[key] = now

    def stats_since(self, index: int) -> list[tuple[float, dict[str, Any]]]:
        with self.lock:
            return self.stats[index:]

    def close(self) -> None:
        self.watcher.close()


class Sensors(Publisher):
    """One MQTT client publishing every simulated sensor's readings with QoS 1, counting acknowledgements."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(host, port, client_id=f"soak-sensors-{uuid.uuid4().hex[:8]}", max_inflight=1000)

    def publish_reading(self, topic: str, payload: bytes) -> None:
        self.publish(topic, payload, keep=True)


def build_messages(n: int, streams: int, faults: str, seed: int) -> tuple[list[tuple[str, bytes]], Any]:
    """``n`` messages from the simulator (send order) and their schedule (ground truth)."""
    from sim.config import SimConfig
    from sim.faults import parse_faults
    from sim.run import build_run

    per_stream = math.ceil(n / streams * 1.1) + 64
    cfg = SimConfig(
        streams=streams, duration_s=per_stream * PERIOD_S, period_s=PERIOD_S, seed=seed, faults=parse_faults(faults)
    )
    schedule = build_run(cfg)
    names = schedule.names
    topics = [INPUT.replace("{stream}", s) for s in names]
    k = min(n, len(schedule))
    stream_of = schedule.stream[:k].tolist()
    return [(topics[stream_of[i]], schedule.payloads[i]) for i in range(k)], schedule


def expected_drops(schedule: Any, sent: int) -> Counter[str]:
    """What the daemon must drop for the injected faults among the first ``sent`` messages."""
    from edge_gru.daemon.payload import parse_payload
    from edge_gru.errors import PayloadError
    from sim.faults import DUPLICATE, GARBAGE, NOT_FINITE, OUT_OF_ORDER

    fates = schedule.fates[:sent]
    out: Counter[str] = Counter()
    out["not_finite"] += int((fates == NOT_FINITE).sum())
    out["duplicate"] += int((fates == DUPLICATE).sum())
    out["out_of_order"] += int((fates == OUT_OF_ORDER).sum())
    for i in np.flatnonzero(fates == GARBAGE).tolist():
        try:
            parse_payload(schedule.payloads[i], ("value",))
        except PayloadError as exc:
            out[getattr(exc, "reason", "bad_payload")] += 1
        else:
            out["garbage_accepted"] += 1  # would be a bug in the simulator's garbage list
    return +out


def fault_messages(schedule: Any, sent: int) -> dict[str, int]:
    """Messages among the first ``sent`` whose fate is a drop, by the simulator's fate name."""
    from sim.faults import FATES

    counts = np.bincount(schedule.fates[:sent].astype(np.int64), minlength=len(FATES))
    return {FATES[i]: int(c) for i, c in enumerate(counts) if c and FATES[i] != "accept"}


def quantiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"n": 0, "p50_ms": None, "p99_ms": None}
    p50, p99 = np.percentile(np.asarray(values) * 1e3, [50, 99])
    return {"n": len(values), "p50_ms": round(float(p50), 2), "p99_ms": round(float(p99), 2)}


def rss_mib(daemon: Daemon) -> float:
    return round(daemon.rss_bytes() / 2**20, 2)


class Soak:
    def __init__(
        self,
        *,
        duration_s: float,
        rate: float,
        streams: int = 50,
        faults: str = "all",
        broker_restarts: int = 1,
        daemon_restarts: int = 1,
        backend: str = "auto",
        model: str | None = None,
        seed: int = 0,
        workdir: Path,
        log: Any = None,
    ) -> None:
        if duration_s <= 0 or rate <= 0 or streams < 1:
            raise ValueError("duration, rate and streams must be positive")
        self.duration_s = duration_s
        self.rate = rate
        self.streams = streams
        self.faults = faults
        self.broker_restarts = broker_restarts
        self.daemon_restarts = daemon_restarts
        self.backend = backend
        self.model = model or str(DEFAULT_MODEL)
        self.seed = seed
        self.workdir = workdir
        self.log = log or functools.partial(print, flush=True)

    def _plan(self) -> list[tuple[float, str]]:
        """Restart times, evenly spread, the two kinds alternating."""
        left = {"broker": self.broker_restarts, "daemon": self.daemon_restarts}
        plan: list[str] = []
        while any(left.values()):
            for kind in ("broker", "daemon"):
                if left[kind]:
                    plan.append(kind)
                    left[kind] -= 1
        n = len(plan)
        return [((j + 1) / (n + 1) * self.duration_s, kind) for j, kind in enumerate(plan)]

    def _quiesce(
        self, collector: Collector, daemon: Daemon, expected: int, since: int, timeout: float = 60.0
    ) -> dict[str, Any]:
        """Wait until this daemon run (stats from index ``since``) has received and processed ``expected``."""
        deadline = time.monotonic() + timeout
        index = since
        last: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            for _, snap in collector.stats_since(index):
                index += 1
                last = snap
                if snap["received"] >= expected and snap["queued"] == 0:
                    return snap
            time.sleep(0.1)
        raise RuntimeError(f"the daemon did not catch up to {expected} readings; last stats {last}")

    def _settle(self, sensors: Sensors, sent: int) -> None:
        deadline = time.monotonic() + 60
        while sensors.acknowledged() < sent and time.monotonic() < deadline:
            time.sleep(0.05)

    def run(self) -> dict[str, Any]:
        n_target = int(self.duration_s * self.rate)
        messages, schedule = build_messages(n_target, self.streams, self.faults, self.seed)
        broker = Broker(self.workdir / "mosquitto").start()
        daemon = Daemon(
            self.workdir / "daemon",
            broker=broker,
            sections={
                "model": {"path": self.model, "backend": self.backend},
                "streams": {"max_streams": max(1000, 2 * self.streams)},
                "state": {"checkpoint_interval_s": 5},
                "stats": {"interval_s": 1.0},
                "logging": {"warn_interval_s": 10.0},
            },
        )
        collector = Collector(broker.host, broker.port, daemon.stats_topic)
        daemon.start()
        daemon.wait_ready(120)
        sensors = Sensors(broker.host, broker.port)
        plan = self._plan()
        runs: list[dict[str, Any]] = []
        run_rss: list[list[tuple[float, float]]] = [[]]
        received_before = 0
        restarts = Counter[str]()
        send_times: dict[tuple[str, float], float] = {}
        self.log(
            f"soak: {len(messages):,} readings from {self.streams} simulated sensors at {self.rate:g}/s "
            f"for {self.duration_s:g} s, faults {self.faults}, restarts {[k for _, k in plan]}"
        )
        t0 = time.monotonic()
        wall0 = time.time()
        next_rss = 0.0
        next_report = self.duration_s / 10
        sent = 0
        acked = 0
        stats_mark = 0
        try:
            for i, (topic, payload) in enumerate(messages):
                due = t0 + i / self.rate
                while True:
                    now = time.monotonic()
                    if now >= next_rss + t0:
                        run_rss[-1].append((now - t0, rss_mib(daemon)))
                        next_rss = now - t0 + 1.0
                    if now >= due:
                        break
                    time.sleep(min(due - now, 0.01))
                if plan and now - t0 >= plan[0][0]:
                    _, kind = plan.pop(0)
                    restarts[kind] += 1
                    # in-flight QoS 1 messages are settled first, so a redelivery cannot count twice
                    self._settle(sensors, sent)
                    snap = self._quiesce(collector, daemon, sent - received_before, stats_mark)
                    if kind == "broker":
                        self.log(f"  {now - t0:7.1f} s  broker restart (sensors pause while it is down)")
                        broker.stop()
                        broker.start()
                        if not sensors.wait_connected(30):
                            raise RuntimeError("the sensors did not reconnect after the broker restart")
                    else:
                        self.log(f"  {now - t0:7.1f} s  daemon restart (SIGTERM; the broker keeps the readings)")
                        run_rss[-1].append((time.monotonic() - t0, rss_mib(daemon)))
                        rc = daemon.stop()
                        runs.append({"final": snap, "exit_code": rc})
                        received_before += snap["received"]
                        stats_mark = len(collector.stats_since(0))
                        daemon.start()
                        run_rss.append([])
                        next_rss = 0.0
                    # the pause is not made up: the rest of the run keeps its pace from here
                    t0 += time.monotonic() - now
                try:
                    ts = float(json.loads(payload)["ts"])
                    send_times.setdefault((topic.split("/")[1], ts), time.time())
                except (ValueError, KeyError, TypeError):
                    pass
                sensors.publish_reading(topic, payload)
                sent += 1
                if now - t0 >= next_report:
                    next_report += self.duration_s / 10
                    with collector.lock:
                        forecasts = len(collector.first_seen)
                    self.log(
                        f"  {now - t0:7.1f} s  sent {sent:,}  forecasts {forecasts:,}  daemon RSS {rss_mib(daemon)} MiB"
                    )
            self._settle(sensors, sent)
            acked = sensors.acknowledged()
            snap = self._quiesce(collector, daemon, acked - received_before, stats_mark)
            run_rss[-1].append((time.monotonic() - t0, rss_mib(daemon)))
            rc = daemon.stop()
            runs.append({"final": snap, "exit_code": rc})
            published = sum(r["final"]["published"] for r in runs)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                with collector.lock:
                    if len(collector.first_seen) >= published:
                        break
                time.sleep(0.1)
        finally:
            sensors.close()
            collector.close()
            if daemon.alive():
                daemon.kill()
            broker.stop()
        elapsed = time.monotonic() - t0
        return self._report(
            messages, schedule, sent, acked, runs, run_rss, restarts, collector, send_times, wall0, elapsed, daemon
        )

    def _report(
        self,
        messages: list[tuple[str, bytes]],
        schedule: Any,
        sent: int,
        acked: int,
        runs: list[dict[str, Any]],
        run_rss: list[list[tuple[float, float]]],
        restarts: Counter[str],
        collector: Collector,
        send_times: dict[tuple[str, float], float],
        wall0: float,
        elapsed: float,
        daemon: Daemon,
    ) -> dict[str, Any]:
        received = sum(r["final"]["received"] for r in runs)
        published = sum(r["final"]["published"] for r in runs)
        dropped: Counter[str] = Counter()
        for r in runs:
            dropped.update(r["final"]["dropped"])
        per_run_ok = all(
            r["final"]["received"]
            == r["final"]["published"] + sum(r["final"]["dropped"].values()) + r["final"]["queued"]
            for r in runs
        )
        expected = expected_drops(schedule, sent)
        fault_mismatch = {
            reason: {"expected": n, "counted": dropped.get(reason, 0)}
            for reason, n in expected.items()
            if dropped.get(reason, 0) != n
        }
        forecasts_seen = len(collector.first_seen)
        window = max(self.duration_s / 10, 5.0)
        buckets: dict[int, list[float]] = {}
        for key, seen in collector.first_seen.items():
            start = send_times.get(key)
            if start is not None:
                buckets.setdefault(int((start - wall0) // window), []).append(seen - start)
        e2e = [
            {"from_s": round(b * window, 1), **quantiles(v)} for b, v in sorted(buckets.items()) if b * window < elapsed
        ]
        daemon_lat: dict[int, list[dict[str, Any]]] = {}
        for at, snap in collector.stats:
            lat = snap.get("latency", {})
            if lat.get("p50_ms") is not None:
                daemon_lat.setdefault(int((at - wall0) // window), []).append(lat)
        inside = [
            {
                "from_s": round(b * window, 1),
                "p50_ms": round(float(np.median([x["p50_ms"] for x in v])), 3),
                "p99_ms": round(float(max(x["p99_ms"] for x in v)), 3),
            }
            for b, v in sorted(daemon_lat.items())
        ]
        rss_runs = []
        for samples in run_rss:
            if len(samples) < 2:
                continue
            values = [r for _, r in samples if r > 0]
            warm = values[min(len(values) - 1, max(1, len(values) // 10))]  # after start-up and JIT
            rss_runs.append(
                {
                    "from_s": round(samples[0][0], 1),
                    "to_s": round(samples[-1][0], 1),
                    "start_mib": warm,
                    "end_mib": values[-1],
                    "max_mib": max(values),
                    "growth_pct": round(100.0 * (values[-1] - warm) / warm, 2),
                }
            )
        longest = max(rss_runs, key=lambda r: r["to_s"] - r["from_s"]) if rss_runs else None
        unaccounted = {
            "sent_not_acknowledged": sent - acked,
            "acknowledged_not_received": acked - received,
            "received_not_published_or_dropped": received - published - sum(dropped.values()),
            "published_not_seen": published - forecasts_seen,
        }
        return {
            "duration_s": round(elapsed, 1),
            "rate_target": self.rate,
            "rate_achieved": round(sent / elapsed, 1) if elapsed else None,
            "streams": self.streams,
            "backend": self.backend,
            "faults": self.faults,
            "faults_injected_in_schedule": {k: v for k, v in schedule.injected.items() if v},
            "fault_messages_sent": fault_messages(schedule, sent),
            "readings_sent": sent,
            "readings_acknowledged": acked,
            "readings_received": received,
            "forecasts_published": published,
            "forecasts_received": forecasts_seen,
            "forecasts_redelivered": collector.duplicates,
            "dropped": dict(sorted(dropped.items())),
            "dropped_expected_for_faults": dict(sorted(expected.items())),
            "fault_drop_mismatch": fault_mismatch,
            "each_run_accounted": per_run_ok,
            "unaccounted": unaccounted,
            "nothing_unaccounted": per_run_ok and not any(unaccounted.values()) and not fault_mismatch,
            "broker_restarts": restarts["broker"],
            "daemon_restarts": restarts["daemon"],
            "daemon_exit_codes": [r["exit_code"] for r in runs],
            "reconnects": sum(r["final"].get("reconnects", 0) for r in runs),
            "gap_resets": sum(r["final"].get("gap_resets", 0) for r in runs),
            "rss_runs": rss_runs,
            "rss_start_mib": rss_runs[0]["start_mib"] if rss_runs else None,
            "rss_end_mib": rss_runs[-1]["end_mib"] if rss_runs else None,
            "rss_growth_pct_longest_run": longest["growth_pct"] if longest else None,
            "latency_end_to_end": e2e,
            "latency_in_daemon": inside,
            "checkpoint_failures": sum(r["final"].get("checkpoint_failures", 0) for r in runs),
        }


def print_report(r: dict[str, Any]) -> None:
    print()
    print(f"readings sent        {r['readings_sent']:>10,}   ({r['rate_achieved']}/s over {r['duration_s']} s)")
    print(f"  acknowledged       {r['readings_acknowledged']:>10,}")
    print(f"  received by daemon {r['readings_received']:>10,}")
    print(f"forecasts published  {r['forecasts_published']:>10,}")
    print(f"  received           {r['forecasts_received']:>10,}   (+{r['forecasts_redelivered']} QoS 1 redeliveries)")
    print("dropped by reason    " + ", ".join(f"{k}={v:,}" for k, v in r["dropped"].items()))
    print("  expected (faults)  " + ", ".join(f"{k}={v:,}" for k, v in r["dropped_expected_for_faults"].items()))
    print(f"fault messages sent  {r['fault_messages_sent']}")
    print(f"  (schedule)         {r['faults_injected_in_schedule']}")
    print(
        f"restarts             broker {r['broker_restarts']}, daemon {r['daemon_restarts']} "
        f"(exit codes {r['daemon_exit_codes']}); reconnects {r['reconnects']}; gap resets {r['gap_resets']}"
    )
    for run in r["rss_runs"]:
        print(
            f"daemon RSS           {run['from_s']:>7.1f}-{run['to_s']:.1f} s: start {run['start_mib']} MiB, "
            f"end {run['end_mib']} MiB, max {run['max_mib']} MiB, growth {run['growth_pct']} %"
        )
    print(
        "latency end to end   "
        + "  ".join(f"[{w['from_s']:g}s p50 {w['p50_ms']} p99 {w['p99_ms']}]" for w in r["latency_end_to_end"])
    )
    print(
        "latency in daemon    "
        + "  ".join(f"[{w['from_s']:g}s p50 {w['p50_ms']} p99 {w['p99_ms']}]" for w in r["latency_in_daemon"])
    )
    print(f"unaccounted          {r['unaccounted']}  fault mismatches {r['fault_drop_mismatch'] or 'none'}")
    print(f"NOTHING UNACCOUNTED  {r['nothing_unaccounted']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of steady publishing (default 60)")
    parser.add_argument("--rate", type=float, default=100.0, help="readings per second (default 100)")
    parser.add_argument("--streams", type=int, default=50, help="simulated sensors (default 50)")
    parser.add_argument("--faults", default="all", help="simulator fault spec, e.g. 'all' or 'nan=0.01' (default all)")
    parser.add_argument("--broker-restarts", type=int, default=None, help="default: 1 per 5 minutes, at least 1")
    parser.add_argument("--daemon-restarts", type=int, default=None, help="default: 1 per 5 minutes, at least 1")
    parser.add_argument("--backend", default="auto", help="the daemon's model.backend (default auto)")
    parser.add_argument("--model", default=None, help="bundle directory (default models/default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", dest="json_path", default=None, help="also write the report as JSON here")
    args = parser.parse_args(argv)
    per_5min = max(1, int(args.duration // 300))
    with tempfile.TemporaryDirectory(prefix="edge-gru-soak-") as tmp:
        soak = Soak(
            duration_s=args.duration,
            rate=args.rate,
            streams=args.streams,
            faults=args.faults,
            broker_restarts=per_5min if args.broker_restarts is None else args.broker_restarts,
            daemon_restarts=per_5min if args.daemon_restarts is None else args.daemon_restarts,
            backend=args.backend,
            model=args.model,
            seed=args.seed,
            workdir=Path(tmp),
        )
        report = soak.run()
    print_report(report)
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(report, indent=2) + "\n")
    return 0 if report["nothing_unaccounted"] else 1


if __name__ == "__main__":
    sys.exit(main())
