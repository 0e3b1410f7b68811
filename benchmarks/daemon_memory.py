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
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge_gru import aot
from edge_gru.procstat import memory_mib
from tests.brokers import Broker

ROOT = Path(__file__).resolve().parent.parent
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


def config(work: Path, broker: Broker, backend: str, model: Path, prefix: str) -> Path:
    path = work / f"{prefix}.toml"
    path.write_text(
        "\n".join(
            [
                "[mqtt]",
                f'host = "{broker.host}"',
                f"port = {broker.port}",
                f'client_id = "{prefix}"',
                "[model]",
                f'path = "{model}"',
                f'backend = "{backend}"',
                "[streams]",
                f'input = ["{prefix}/in/{{stream}}"]',
                f'output = "{prefix}/out/{{stream}}"',
                "[state]",
                f'dir = "{work / prefix}-state"',
                "checkpoint_interval_s = 3600",
                "",
            ]
        )
    )
    return path


class Notify:
    """A ``$NOTIFY_SOCKET`` datagram socket that timestamps READY=1."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.ready_at: float | None = None
        self._stop = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            if b"READY=1" in data.split(b"\n") and self.ready_at is None:
                self.ready_at = time.perf_counter()

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        self.sock.close()


def run_daemon(
    name: str, args: argparse.Namespace, broker: Broker, work: Path, start_number: int, serve: bool
) -> dict[str, Any]:
    backend, extra_env = BACKENDS[name]
    prefix = f"mem-{name}-{start_number}"
    cfg = config(work, broker, backend, Path(args.model).resolve(), prefix)
    notify = Notify(work / f"{prefix}.notify")
    env = {
        **os.environ,
        **extra_env,
        "NOTIFY_SOCKET": str(notify.path),
        "NUMBA_CACHE_DIR": str(work / "numba-cache"),
        "PYTHONUNBUFFERED": "1",
    }
    if args.kernel_dir:
        env[aot.KERNEL_DIR_ENV] = args.kernel_dir
    got: dict[str, int] = {}
    lock = threading.Lock()
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{prefix}-sub")

    def on_message(client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with lock:
            got[msg.topic] = got.get(msg.topic, 0) + 1

    sub.on_message = on_message
    sub.connect(broker.host, broker.port)
    sub.subscribe(f"{prefix}/out/+", qos=1)
    sub.loop_start()
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_gru.cli", "serve", "--config", str(cfg)],
        env=env,
        cwd=work,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    out: dict[str, Any] = {"backend": name, "start": start_number}
    try:
        deadline = time.perf_counter() + 600
        while notify.ready_at is None and proc.poll() is None and time.perf_counter() < deadline:
            time.sleep(0.005)
        if notify.ready_at is None:
            err = proc.stderr.read().decode(errors="replace")[-600:] if proc.stderr and proc.poll() is not None else ""
            out["error"] = f"no READY=1 ({err.strip()})"
            return out
        out["start_to_ready_s"] = round(notify.ready_at - started, 3)
        if not serve:
            return out
        pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{prefix}-pub")
        pub.connect(broker.host, broker.port)
        pub.loop_start()
        t0 = 1_700_000_000.0
        for step in range(args.steps):
            infos = [
                pub.publish(
                    f"{prefix}/in/s{i}",
                    json.dumps({"value": 20.0 + (i % 7) + 0.3 * step, "ts": t0 + 60.0 * step}),
                    qos=1,
                )
                for i in range(args.streams)
            ]
            for info in infos:
                info.wait_for_publish(30)
        expected = args.streams * max(args.steps - args.warmup, 1)
        deadline = time.perf_counter() + 120
        while time.perf_counter() < deadline:
            with lock:
                n = sum(got.values())
            if n >= expected:
                break
            time.sleep(0.05)
        out["forecasts"] = n
        out["streams_forecasting"] = len(got)
        out.update({k.lower() + "_mib": round(v, 1) for k, v in memory_mib(proc.pid).items()})
        out["heavy_libraries"] = heavy_libraries(proc.pid)
        pub.loop_stop()
        pub.disconnect()
        return out
    finally:
        sub.loop_stop()
        sub.disconnect()
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
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
    work = Path(tempfile.mkdtemp(prefix="edge-gru-mem-"))
    broker = Broker(work / "mosquitto").start()
    rows = []
    try:
        for name in [b for b in args.backends.split(",") if b]:
            first = run_daemon(name, args, broker, work, 1, serve=False)  # fills the kernel cache
            second = run_daemon(name, args, broker, work, 2, serve=True)
            second["first_start_to_ready_s"] = first.get("start_to_ready_s", first.get("error"))
            rows.append(second)
    finally:
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)
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
