"""End-to-end throughput and latency of ``edge-gru serve`` through a real mosquitto.

Not a test: it measures. A mosquitto, the daemon (pinned to one CPU core with taskset
when there are several), a paced publisher (this process) and a forecast subscriber (a
child process) run on this machine. For each offered rate the daemon gets ``--seconds``
of readings from ``--streams`` streams (JSON ``{"value", "ts"}`` at QoS 1, after a
warm-up pass so every stream forecasts), and we report:

- forecasts/s received by the subscriber and the drops the daemon counted;
- latency receive -> publish inside the daemon (its stats topic) and end to end
  (publisher's send time, carried as the reading's ts, to the subscriber's receipt);
- the daemon's peak RSS (VmHWM) and RSS.

    .venv/bin/python benchmarks/daemon_throughput.py                      # numba, and tflite if present
    .venv/bin/python benchmarks/daemon_throughput.py --backends numba --rates 1000,5000 --json
    .venv/bin/python benchmarks/daemon_throughput.py --backends numba --pack 1,50   # side by side

``--pack N`` sends the same readings as SenML packs of N records (consecutive streams, one
gateway topic) instead of one message per reading; ``--pack 1,50`` runs both in one go.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge_gru.harness import ROOT, Broker, Daemon, Publisher, Watcher, scratch_broker
from edge_gru.procstat import memory_mib


def subscriber(host: str, port: int, topics: list[str], conn: Any, stop: Any) -> None:
    """Child process: count forecasts per phase and collect end-to-end latencies."""
    arrivals: list[tuple[int, float, float]] = []  # (stream index, reading ts, receive time)
    stats: list[dict[str, Any]] = []

    def on_message(topic: str, payload: bytes, retain: bool) -> None:
        now = time.perf_counter()
        if topic.endswith("/stats"):
            stats.append(json.loads(payload))
            return
        arrivals.append((int(topic.rsplit("/s", 1)[1]), json.loads(payload)["ts"], now))

    watcher = Watcher(host, port, topics, qos=0, protocol="5", handler=on_message, record=False)
    conn.send("ready")
    while True:
        cmd = conn.recv()
        if cmd == "reset":
            arrivals.clear()
            stats.clear()
            conn.send("ok")
        elif cmd == "count":
            conn.send(len(arrivals))
        elif cmd == "report":
            conn.send({"arrivals": np.array(arrivals).reshape(-1, 3), "stats": list(stats)})
        elif cmd == "quit":
            break
    watcher.close()


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


PERIOD_S = 1.0  # the readings' own clock: one reading per stream per virtual second, whatever the rate
TS0 = 1_700_000_000.0


def publish_phase(
    client: Any,
    prefix: str,
    streams: int,
    rate: float,
    seconds: float,
    k: np.ndarray,
    sent_at: dict,
    pack: int = 1,
) -> int:
    """Publish at ``rate`` readings/s round-robin over the streams for ``seconds``; returns readings sent.

    Reading number ``k[i]`` of stream i carries ts = TS0 + k[i] * PERIOD_S, so the sample
    period the daemon sees is the same at every rate; ``sent_at[(i, ts)]`` keeps the send time.
    """
    total = int(rate * seconds)
    tick = 0.005
    per_tick = max(1, round(rate * tick))
    start = time.perf_counter()
    sent = 0
    values = 20 + 5 * np.sin(np.arange(streams) / 7.0)
    topics = [f"{prefix}/in/s{i}/value" for i in range(streams)]
    gateway = f"{prefix}/senml/gw"
    per_tick = max(per_tick, pack)
    while sent < total:
        due = start + sent / rate
        now = time.perf_counter()
        if due > now:
            time.sleep(due - now)
        records: list[bytes] = []
        for _ in range(min(per_tick, total - sent)):
            i = sent % streams
            ts = TS0 + k[i] * PERIOD_S
            k[i] += 1
            sent_at[(i, ts)] = time.perf_counter()
            value = values[i] + (sent % 13) * 0.01
            if pack <= 1:
                client.publish(topics[i], b'{"value":%.4f,"ts":%.1f}' % (value, ts), qos=1)
            else:
                records.append(b'{"n":"s%d","v":%.4f,"t":%.1f}' % (i, value, ts))
                if len(records) == pack:
                    client.publish(gateway, b"[" + b",".join(records) + b"]", qos=1)
                    records.clear()
            sent += 1
        if records:
            client.publish(gateway, b"[" + b",".join(records) + b"]", qos=1)
    return sent


def run_backend(backend: str, args: argparse.Namespace, broker: Broker, work: Path, pack: int = 1) -> dict[str, Any]:
    prefix = f"bench-{backend}-p{pack}"
    cpus = os.sched_getaffinity(0)
    pin = ["taskset", "-c", str(max(cpus))] if args.pin and len(cpus) > 1 and shutil.which("taskset") else []
    daemon = Daemon(
        work / backend,
        broker=broker,
        client_id=f"bench-{backend}-p{pack}",
        name=f"{backend}-p{pack}",
        own_numba_cache=False,
        wrapper=pin,
        sections={
            "mqtt": {"protocol": args.protocol, "reconnect_min_s": None, "reconnect_max_s": None},
            "model": {"path": str(Path(args.model).resolve()), "backend": backend},
            "streams": {
                "input": [f"{prefix}/in/{{stream}}/value"],
                "senml_input": [f"{prefix}/senml/+"],
                "output": f"{prefix}/out/{{stream}}",
                "output_qos": args.output_qos,
                "max_streams": args.streams,
                "queue_size": 20000,
            },
            "state": {"dir": str(work / f"state-p{pack}"), "checkpoint_interval_s": 30},
            "stats": {"interval_s": 1},
            "logging": {"level": "warning", "warn_interval_s": None},
        },
    )
    status = Watcher(broker.host, broker.port, [daemon.status_topic], qos=0, protocol="5")
    daemon.start()
    parent, child = mp.Pipe()
    stop = mp.Event()
    sub = mp.Process(
        target=subscriber,
        args=(broker.host, broker.port, [f"{prefix}/out/+", daemon.stats_topic], child, stop),
    )
    sub.start()
    parent.recv()
    pub = Publisher(broker.host, broker.port, protocol="5", max_inflight=1000).client
    deadline = time.monotonic() + 180
    while b"online" not in status.on(daemon.status_topic):
        if not daemon.alive() or time.monotonic() > deadline:
            raise SystemExit(f"daemon for {backend} did not come up:\n{daemon.log_text()[-2000:]}")
        time.sleep(0.05)
    k = np.zeros(args.streams, dtype=np.int64)
    results: dict[str, Any] = {"backend": backend, "pack": pack, "phases": []}
    try:
        # warm-up: every stream past its warm-up, so each later reading yields a forecast
        publish_phase(pub, prefix, args.streams, 3000, args.streams * 12 / 3000, k, {}, pack)
        time.sleep(3)
        for rate in args.rates:
            parent.send("reset")
            parent.recv()
            sent_at: dict[tuple[int, float], float] = {}
            cpu0 = cpu_s(daemon.pid)
            t_start = time.perf_counter()
            sent = publish_phase(pub, prefix, args.streams, rate, args.seconds, k, sent_at, pack)
            t_end = time.perf_counter()
            while time.perf_counter() - t_end < 15:  # wait for the tail, bounded
                parent.send("count")
                if parent.recv() >= sent:
                    break
                time.sleep(0.1)
            cpu = cpu_s(daemon.pid) - cpu0
            time.sleep(1.1)  # one more stats message
            parent.send("report")
            rep = parent.recv()
            arrivals, stats = rep["arrivals"], rep["stats"]
            e2e = np.array([r - sent_at[(int(i), ts)] for i, ts, r in arrivals if (int(i), ts) in sent_at]) * 1e3
            span = (arrivals[:, 2].max() - min(sent_at.values())) if len(arrivals) else float("nan")
            p50s = [s["latency"]["p50_ms"] for s in stats if s["latency"]["p50_ms"] is not None]
            p99s = [s["latency"]["p99_ms"] for s in stats if s["latency"]["p99_ms"] is not None]
            dropped: dict[str, int] = {}
            if len(stats) >= 2:
                first, last = stats[0]["dropped"], stats[-1]["dropped"]
                dropped = {r: n - first.get(r, 0) for r, n in last.items() if n - first.get(r, 0)}
            phase = {
                "pack": pack,
                "offered_per_s": rate,
                "sent": sent,
                "publisher_per_s": round(sent / (t_end - t_start), 1),  # what the load generator managed
                "forecasts": len(arrivals),
                "delivered_per_s": round(len(arrivals) / span, 1) if len(arrivals) else 0.0,
                "dropped": dropped,
                # CPU the daemon spent per reading: its capacity on one free core is 1e6 / this
                "daemon_cpu_us_per_reading": round(cpu / sent * 1e6, 1),
                "daemon_p50_ms": round(float(np.median(p50s)), 2) if p50s else None,
                "daemon_p99_ms": round(float(max(p99s)), 2) if p99s else None,  # worst 1-s interval
                "e2e_p50_ms": round(float(np.percentile(e2e, 50)), 2) if e2e.size else None,
                "e2e_p99_ms": round(float(np.percentile(e2e, 99)), 2) if e2e.size else None,
                **{key.lower() + "_mib": round(v, 1) for key, v in memory_mib(daemon.pid).items()},
            }
            results["phases"].append(phase)
            print(json.dumps(phase), file=sys.stderr)
            time.sleep(1)
    finally:
        parent.send("quit")
        sub.join(10)
        pub.loop_stop()
        status.close()
        daemon.stop()
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "models" / "default"))
    ap.add_argument("--backends", default="numba,tflite")
    ap.add_argument("--streams", type=int, default=1000)
    ap.add_argument("--rates", default="1000,2000,5000,8000")
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--output-qos", type=int, default=1)
    ap.add_argument("--protocol", default="5", choices=["5", "3.1.1"], help="the daemon's MQTT version")
    ap.add_argument("--pack", default="1", help="records per SenML pack, comma separated (1: one per message)")
    ap.add_argument("--no-pin", dest="pin", action="store_false", help="let the scheduler place the daemon")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    args.rates = [float(r) for r in args.rates.split(",")]
    args.pack = [int(p) for p in args.pack.split(",")]
    import edge_gru
    from edge_gru.bench.timing import machine_info

    info = machine_info()
    out: dict[str, Any] = {
        "machine": f"{info['cpu']}, {info['cores']} CPUs ({info['machine']}), load {info['load_average']}",
        "machine_info": info,
        "streams": args.streams,
        "runs": [],
    }
    deep = "max_inflight_messages 1000\nmax_queued_messages 1000000\n"
    with scratch_broker("edge-gru-bench-", extra_config=deep) as (broker, work):
        for backend in args.backends.split(","):
            try:
                edge_gru.load(args.model, backend=backend)
            except Exception as exc:  # a backend or its model file missing: say so, go on
                print(f"skipping {backend}: {exc}", file=sys.stderr)
                out["runs"].append({"backend": backend, "skipped": str(exc)})
                continue
            for pack in args.pack:
                out["runs"].append(run_backend(backend, args, broker, work, pack))
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(
        f"edge-gru serve through mosquitto, {args.streams} streams, QoS 1 in, QoS {args.output_qos} out, "
        f"MQTT {args.protocol}, {out['machine']}"
    )
    head = (
        f"{'backend':8} {'pack':>4} {'offered/s':>9} {'out/s':>8} {'drops':>6} {'daemon p50/p99 ms':>18} "
        f"{'e2e p50/p99 ms':>16} {'RSS/peak MiB':>13} {'CPU us/reading':>14}"
    )
    print(head)
    for run in out["runs"]:
        if "skipped" in run:
            print(f"{run['backend']:8} skipped: {run['skipped'][:90]}")
            continue
        for p in run["phases"]:
            print(
                f"{run['backend']:8} {run['pack']:>4} {p['offered_per_s']:>9.0f} {p['delivered_per_s']:>8.0f} "
                f"{sum(p['dropped'].values()):>6} {p['daemon_p50_ms']!s:>8}/{p['daemon_p99_ms']!s:<9} "
                f"{p['e2e_p50_ms']!s:>7}/{p['e2e_p99_ms']!s:<8} {p.get('vmrss_mib')!s:>6}/{p.get('vmhwm_mib')!s:<6} "
                f"{p['daemon_cpu_us_per_reading']:>14}"
            )


if __name__ == "__main__":
    main()
