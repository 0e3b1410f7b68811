"""Readings/s of 1, 2 and 3 ``edge-gru serve`` cluster members sharing the partitions of a NATS cluster.

Not a test: it measures. A 3-node NATS cluster (JetStream, replicas 3) and N members run
on this machine. The members start, settle on a balanced assignment and are then paused
(SIGSTOP); a backlog of readings (``--streams`` streams x ``--rounds`` rounds, JSON with
``ts``) is stored in the cluster; the members are resumed (SIGCONT) and we time until every
forecast is stored in the output stream. So the figure is the cluster's drain rate, with
no publisher competing for the CPU, and the CPU seconds that the members and the NATS
servers spent per reading tell what a core buys.

    .venv/bin/python benchmarks/cluster_throughput.py                  # 1, 2, 3 members, numba
    .venv/bin/python benchmarks/cluster_throughput.py --members 1,2 --backend numpy --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import nats  # noqa: E402

from edge_gru.daemon.cluster import subject_mappings  # noqa: E402
from edge_gru.daemon.config import load_config  # noqa: E402
from edge_gru.harness import NatsCluster  # noqa: E402

PARTITIONS = 12
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown CPU"
    info = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    return f"{info.get('Model name', '?').strip()}, {os.cpu_count()} CPUs"


def write_config(path: Path, name: str, servers: list[str], backend: str, state: Path) -> Path:
    path.write_text(
        f"""
[mqtt]
client_id = "{name}"
[model]
path = "{ROOT / "models" / "default"}"
backend = "{backend}"
[state]
dir = "{state}"
checkpoint_interval_s = 600
[stats]
interval_s = 0
[logging]
level = "warning"
[cluster]
enabled = true
servers = {json.dumps(servers)}
partitions = {PARTITIONS}
lease_ttl_s = 600
heartbeat_s = 0.5
duplicate_window_s = 1300
retention_s = 3600
"""
    )
    return path


async def balanced(nc: Any, names: list[str]) -> bool:
    own = []
    for name in names:
        try:
            s = json.loads((await nc.request(f"edge-gru.{name}.control", b"stats", timeout=2)).data)
        except Exception:
            return False
        if sorted(s["members"]) != sorted(names):
            return False
        own.append(s["partitions"])
    return sorted(p for ps in own for p in ps) == list(range(PARTITIONS))


async def run_once(n_members: int, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    probe = write_config(root / "probe.toml", "probe", ["nats://127.0.0.1:4222"], args.backend, root)
    cluster = NatsCluster(root / "nats", 3, mappings=subject_mappings(load_config(probe))).start()
    names = [f"b{i}" for i in range(n_members)]
    procs: list[subprocess.Popen[bytes]] = []
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        for name in names:
            cfg = write_config(root / f"{name}.toml", name, cluster.urls, args.backend, root / "state")
            log = open(root / f"{name}.log", "ab")  # noqa: SIM115
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "edge_gru.cli", "serve", "--config", str(cfg)],
                    stdout=log,
                    stderr=log,
                    env=env,
                )
            )
            log.close()
        nc = await nats.connect(servers=cluster.urls)
        js = nc.jetstream(timeout=5.0)
        deadline = time.monotonic() + 120
        while not await balanced(nc, names):
            if time.monotonic() > deadline:
                raise TimeoutError("members did not settle")
            await asyncio.sleep(0.1)
        for p in procs:
            p.send_signal(signal.SIGSTOP)
        total = args.streams * args.rounds
        warm = 10  # the default bundle's warm-up: the first 10 readings of a stream give no forecast
        expected = args.streams * max(args.rounds - warm, 0)
        for k in range(args.rounds):
            futs = [
                await js.publish_async(
                    f"sensors.s{i}.value",
                    json.dumps({"value": 20.0 + (i % 7) + 0.1 * (k % 24), "ts": 1.7e9 + 60 * k}).encode(),
                )
                for i in range(args.streams)
            ]
            await asyncio.gather(*futs)
        member_cpu0 = sum(cpu_seconds(p.pid) for p in procs)
        nats_cpu0 = sum(cpu_seconds(node.proc.pid) for node in cluster.nodes if node.proc)
        t0 = time.perf_counter()
        for p in procs:
            p.send_signal(signal.SIGCONT)
        while int((await js.stream_info("EDGE_GRU_OUT")).state.messages) < expected:
            await asyncio.sleep(0.02)
        elapsed = time.perf_counter() - t0
        member_cpu = sum(cpu_seconds(p.pid) for p in procs) - member_cpu0
        nats_cpu = sum(cpu_seconds(node.proc.pid) for node in cluster.nodes if node.proc) - nats_cpu0
        await nc.close()
        return {
            "members": n_members,
            "readings": total,
            "forecasts": expected,
            "seconds": round(elapsed, 3),
            "readings_per_s": round(total / elapsed, 1),
            "member_cpu_s": round(member_cpu, 2),
            "nats_cpu_s": round(nats_cpu, 2),
            "readings_per_member_cpu_s": round(total / max(member_cpu, 1e-9), 1),
            "readings_per_cpu_s": round(total / max(member_cpu + nats_cpu, 1e-9), 1),
        }
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.terminate()
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        cluster.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--members", default="1,2,3")
    ap.add_argument("--streams", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--backend", default="numba")
    ap.add_argument("--repeat", type=int, default=1, help="runs per member count; the median run is reported")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    results = []
    for n in (int(x) for x in args.members.split(",")):
        runs = []
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory(prefix="edge-gru-cluster-bench-") as tmp:
                runs.append(asyncio.run(run_once(n, args, Path(tmp))))
        runs.sort(key=lambda r: r["readings_per_s"])
        results.append(runs[len(runs) // 2])
    base = results[0]["readings_per_s"]
    for r in results:
        r["ratio"] = round(r["readings_per_s"] / base, 2)
    if args.json:
        print(json.dumps({"cpu": cpu_name(), "backend": args.backend, "results": results}, indent=2))
        return
    print(f"CPU: {cpu_name()}; backend {args.backend}; {args.streams} streams x {args.rounds} rounds; 3 NATS nodes")
    print("members  readings/s  ratio  member CPU s  NATS CPU s  readings per member-CPU-s  per CPU-s (all)")
    for r in results:
        print(
            f"{r['members']:>7}  {r['readings_per_s']:>10}  {r['ratio']:>5}  {r['member_cpu_s']:>12}  "
            f"{r['nats_cpu_s']:>10}  {r['readings_per_member_cpu_s']:>25}  {r['readings_per_cpu_s']:>15}"
        )


if __name__ == "__main__":
    main()
