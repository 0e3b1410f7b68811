"""Memory and start-up of ``edge-gru serve`` per backend: RSS serving 100 streams, start to READY.

Not a test: it measures. For each backend a real daemon starts against a real mosquitto
with ``$NOTIFY_SOCKET`` pointing at a datagram socket here, exactly as systemd runs a
``Type=notify`` service. We report:

- start -> READY=1: from spawning the process to the daemon's READY=1 (it is sent once
  the daemon is subscribed); the first start fills the kernel cache (numba JIT), the
  second start is the warm-cache figure;
- RSS (VmRSS) and peak RSS (VmHWM) after serving ``--streams`` streams for ``--steps``
  readings each (all forecasts received), and whether numba/llvmlite are mapped.

    .venv/bin/python benchmarks/daemon_memory.py                     # numba-aot, numba-jit, tflite, tflite-int8, numpy
    .venv/bin/python benchmarks/daemon_memory.py --backends numba-aot,tflite --json

The ``numba-aot`` row needs ``edge-gru build-kernels`` first (or ``--kernel-dir DIR``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path
from typing import Any

from edge_gru import aot
from edge_gru.harness import ROOT, Broker, Daemon, NotifySocket, Publisher, Watcher, scratch_broker, wait_until
from edge_gru.procstat import memory_mib

BACKENDS = {
    "numba-aot": ("numba", {"EDGE_GRU_KERNELS": "aot"}),
    "numba-jit": ("numba", {"EDGE_GRU_KERNELS": "jit"}),
    "tflite": ("tflite", {}),
    "tflite-int8": ("tflite-int8", {}),
    "numpy": ("numpy", {}),
}


def heavy_libraries(pid: int) -> list[str]:
    with open(f"/proc/{pid}/maps", encoding="utf-8") as fh:
        paths = {line.split()[-1] for line in fh if len(line.split()) >= 6}
    return sorted({p.split("/")[-1] for p in paths if "llvmlite" in p or "/numba/" in p or "tensorflow" in p})


def run_daemon(
    name: str, args: argparse.Namespace, broker: Broker, work: Path, start_number: int, serve: bool
) -> dict[str, Any]:
    backend, extra_env = BACKENDS[name]
    prefix = f"mem-{name}-{start_number}"
    notify = NotifySocket()
    env = {**extra_env, "NOTIFY_SOCKET": notify.path, "NUMBA_CACHE_DIR": str(work / "numba-cache")}
    if args.kernel_dir:
        env[aot.KERNEL_DIR_ENV] = args.kernel_dir
    daemon = Daemon(
        work / prefix,
        broker=broker,
        client_id=prefix,
        env=env,
        sections={
            "mqtt": {"reconnect_min_s": None, "reconnect_max_s": None},  # the product's defaults
            "model": {"path": str(Path(args.model).resolve()), "backend": backend},
            "streams": {"input": [f"{prefix}/in/{{stream}}"], "output": f"{prefix}/out/{{stream}}"},
            "state": {"checkpoint_interval_s": 3600},
            "stats": {"interval_s": None},
            "logging": {"level": None, "warn_interval_s": None},
        },
    )
    sub = Watcher(broker.host, broker.port, [f"{prefix}/out/+"], client_id=f"{prefix}-sub")
    out: dict[str, Any] = {"backend": name, "start": start_number}
    try:
        daemon.start()
        try:
            ready_at = wait_until(
                lambda: notify.first("READY", "1") or (not daemon.alive() and -1.0), 600, "READY=1", interval=0.005
            )
        except AssertionError:
            ready_at = -1.0
        if ready_at < 0:
            out["error"] = f"no READY=1 ({daemon.log_text()[-600:].strip()})"
            return out
        out["start_to_ready_s"] = round(ready_at - daemon.started_at, 3)
        if not serve:
            return out
        pub = Publisher(broker.host, broker.port, client_id=f"{prefix}-pub")
        t0 = 1_700_000_000.0
        for step in range(args.steps):
            pub.publish_all(
                [
                    (f"{prefix}/in/s{i}", json.dumps({"value": 20.0 + (i % 7) + 0.3 * step, "ts": t0 + 60.0 * step}))
                    for i in range(args.streams)
                ],
                timeout=30,
            )
        expected = args.streams * max(args.steps - args.warmup, 1)
        with contextlib.suppress(AssertionError):
            wait_until(lambda: sub.count(f"{prefix}/out/+") >= expected, 120, "the forecasts", interval=0.05)
        with sub.lock:
            topics = [t for t, _, _ in sub.messages]
        out["forecasts"] = len(topics)
        out["streams_forecasting"] = len(set(topics))
        out.update({k.lower() + "_mib": round(v, 1) for k, v in memory_mib(daemon.pid).items()})
        out["heavy_libraries"] = heavy_libraries(daemon.pid)
        pub.close()
        return out
    finally:
        sub.close()
        daemon.stop()
        notify.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--model", default=str(ROOT / "models" / "default"))
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=10, help="readings before a stream forecasts (the bundle's)")
    parser.add_argument(
        "--kernel-dir", default=None, help=f"where the AOT kernels are (default: ${aot.KERNEL_DIR_ENV})"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = []
    with scratch_broker("edge-gru-mem-") as (broker, work):
        for name in [b for b in args.backends.split(",") if b]:
            first = run_daemon(name, args, broker, work, 1, serve=False)  # fills the kernel cache
            second = run_daemon(name, args, broker, work, 2, serve=True)
            second["first_start_to_ready_s"] = first.get("start_to_ready_s", first.get("error"))
            rows.append(second)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"edge-gru serve, {args.streams} streams x {args.steps} readings, bundle {args.model}")
    print(
        f"{'backend':<12} {'1st start->READY s':>18} {'warm start->READY s':>19} {'RSS MiB':>8} {'peak MiB':>9}  notes"
    )
    for r in rows:
        notes = r.get("error") or (
            f"{r.get('forecasts')} forecasts from {r.get('streams_forecasting')} streams; "
            + ("maps " + ", ".join(r["heavy_libraries"]) if r.get("heavy_libraries") else "no numba/llvmlite mapped")
        )
        print(
            f"{r['backend']:<12} {r.get('first_start_to_ready_s')!s:>18} {r.get('start_to_ready_s')!s:>19} "
            f"{r.get('vmrss_mib')!s:>8} {r.get('vmhwm_mib')!s:>9}  {notes}"
        )


if __name__ == "__main__":
    main()
