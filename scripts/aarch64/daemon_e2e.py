"""The MQTT daemon end to end on emulated aarch64, driven from the x86-64 host.

A mosquitto on the host's loopback; ``edge-gru serve`` with the config that
``deploy/install.sh`` wrote, run inside the arm64 root (qemu-user through binfmt; the
root shares the host's network, so 127.0.0.1 is the host's broker); the stored readings
published from the host as a sensor would; every forecast collected and compared with the
x86-64 stream-pool forecasts for the same readings, to 1e-5 of each stream's scale. Then
SIGTERM: the daemon must exit 0, publish ``offline`` and leave a checkpoint that the
x86-64 pool can load and continue from.

Run by ``scripts/test-aarch64`` (stage ``daemon``); exits 1 when any check fails.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import time
import uuid
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts" / "aarch64" / "checks"))

from arm_checks import TOL, Report, load_reference, meta, stream_scale  # noqa: E402

from edge_gru.harness import Broker, Daemon, Publisher, Watcher  # noqa: E402

CONFIG = "/etc/edge-gru/edge-gru.toml"  # written by deploy/install.sh inside the root


def daemon_command(root: str, venv: str, config: str, overrides: dict[str, str]) -> list[str]:
    env = {
        "HOME": "/root",
        "LANG": "C.UTF-8",
        "QEMU_CPU": os.environ.get("QEMU_CPU", "cortex-a72"),
        "PATH": f"{venv}/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        # as the systemd unit sets them
        "NUMBA_CACHE_DIR": "/var/cache/edge-gru",
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        **overrides,
    }
    assignments = [f"{k}={v}" for k, v in env.items()]
    return ["chroot", root, "/usr/bin/env", "-i", *assignments, f"{venv}/bin/edge-gru", "serve", "--config", config]


def tail(log: Path, n: int = 30) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-n:]) if log.exists() else "(no log)"


def payload(value: float, ts: float) -> bytes:
    if not math.isfinite(value):
        return b'{"value": NaN, "ts": %r}' % ts  # what a broken sensor sends; must be dropped
    return json.dumps({"value": value, "ts": ts}).encode()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", required=True)
    ap.add_argument("--venv", default="/opt/edge-gru/venv")
    ap.add_argument("--reference", required=True, help="x86-64 forecasts (make_reference.py output)")
    ap.add_argument("--bundle", default=str(REPO / "models" / "default"), help="host copy of the served bundle")
    ap.add_argument("--backend", default="numba", help="x86-64 backend to compare with")
    ap.add_argument("--work", required=True)
    ap.add_argument("--config", default=CONFIG, help="daemon config inside the root")
    ap.add_argument("--state-dir", default="/var/lib/edge-gru", help="the daemon's state dir inside the root")
    ap.add_argument("--ready-timeout", type=float, default=600.0)
    args = ap.parse_args()

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    ref = load_reference(args.reference)
    ids = [str(s) for s in ref["readings.ids"]]
    values, ts = ref["readings.values"], ref["readings.ts"]
    want, status = ref[f"forecast.{args.backend}"], ref[f"status.{args.backend}"]
    bundle_id = meta(ref)["bundle_id"]
    scale = stream_scale(values)
    report = Report()

    broker = Broker(work / "broker").start()
    client_id = f"pi-{uuid.uuid4().hex[:6]}"
    status_topic = f"edge-gru/{client_id}/status"
    watcher = Watcher(broker.host, broker.port, ["predictions/+", status_topic, f"edge-gru/{client_id}/stats"])
    state_dir = Path(args.root) / args.state_dir.lstrip("/")
    checkpoint = state_dir / f"{client_id}.checkpoint.npz"
    overrides = {
        "EDGE_GRU_MQTT_PORT": str(broker.port),
        "EDGE_GRU_MQTT_HOST": "127.0.0.1",
        "EDGE_GRU_MQTT_CLIENT_ID": client_id,
        "EDGE_GRU_STATS_INTERVAL_S": "1",
        "EDGE_GRU_STATE_DIR": args.state_dir,
    }
    daemon = Daemon(
        work,
        broker=broker,
        client_id=client_id,
        command=daemon_command(args.root, args.venv, args.config, overrides),
        own_numba_cache=False,
    )
    log = daemon.log_path
    publisher: Publisher | None = None
    try:
        t0 = time.monotonic()
        daemon.start()
        daemon.wait_for(lambda: b"online" in watcher.on(status_topic), args.ready_timeout, "status online")
        print(f"  daemon online after {time.monotonic() - t0:.1f} s (client id {client_id})", flush=True)

        publisher = Publisher(broker.host, broker.port)
        messages = [
            (f"sensors/{sid}/value", payload(float(values[k, s]), float(ts[k, s])))
            for k in range(values.shape[0])
            for s, sid in enumerate(ids)
        ]
        t1 = time.monotonic()
        publisher.publish_all(messages, timeout=120)
        expected = {(ids[s], float(ts[k, s])): float(want[k, s]) for k, s in zip(*np.nonzero(status == 0), strict=True)}
        daemon.wait_for(lambda: len(watcher.on("predictions/+")) >= len(expected), 300, f"{len(expected)} forecasts")
        took = time.monotonic() - t1
        time.sleep(1.5)  # anything extra would show up now
        docs = [json.loads(p) for p in watcher.on("predictions/+")]
        print(f"  {len(messages)} readings in, {len(docs)} forecasts out in {took:.1f} s", flush=True)

        got = {(d["stream"], float(d["ts"])): float(d["value"]) for d in docs}
        report.check(
            "one forecast per accepted reading, none for the rest",
            len(docs) == len(expected) and set(got) == set(expected),
            f"{len(docs)} published, {len(expected)} expected, {len(set(got) ^ set(expected))} differ",
        )
        common = sorted(set(got) & set(expected))
        if common:
            col = {sid: i for i, sid in enumerate(ids)}
            rel = [abs(got[k] - expected[k]) / scale[col[k[0]]] for k in common]
            worst = max(rel)
            report.check(
                f"forecasts equal x86-64 {args.backend} pool forecasts",
                worst <= TOL,
                f"{len(common)} forecasts, max |diff|/scale {worst:.2e} (tolerance {TOL:.0e})",
            )
        models = sorted({str(d.get("model")) for d in docs})
        backends = sorted({str(d.get("backend")) for d in docs})
        report.check("payloads name the bundle", models == [bundle_id], f"model {models}, backend {backends}")
        stats_raw = watcher.on(f"edge-gru/{client_id}/stats")
        if stats_raw:
            stats = json.loads(stats_raw[-1])
            print(f"  last stats: {json.dumps({k: stats.get(k) for k in ('received', 'published', 'dropped')})}")

        daemon.signal(signal.SIGTERM)
        rc = daemon.wait(120)
        report.check("SIGTERM: exit status 0", rc == 0, f"exit {rc}")
        time.sleep(0.5)
        report.check("SIGTERM: status offline", watcher.on(status_topic)[-1:] == [b"offline"], "retained status")
        report.check("SIGTERM: checkpoint written", checkpoint.exists(), str(checkpoint))
        if checkpoint.exists():
            continue_on_x86(report, args.bundle, args.backend, checkpoint, ids, values, ts, scale)
    except Exception as exc:
        report.check("daemon run", False, f"{type(exc).__name__}: {exc}")
    finally:
        daemon.kill()
        if publisher is not None:
            publisher.close()
        watcher.close()
        broker.stop()
        if checkpoint.exists():
            checkpoint.unlink()
    print("  daemon log (last lines):")
    print("    " + tail(log, 8).replace("\n", "\n    "))
    return report.finish(f"daemon in {args.root}")


def continue_on_x86(
    report: Report,
    bundle: str,
    backend: str,
    checkpoint: Path,
    ids: list[str],
    values: np.ndarray,
    ts: np.ndarray,
    scale: np.ndarray,
) -> None:
    """A checkpoint written on aarch64 loads on x86-64 and continues as if nothing had moved."""
    import edge_gru

    model = edge_gru.load(bundle, backend=backend)
    moved, stayed = model.pool(len(ids) + 8), model.pool(len(ids) + 8)
    moved.load(checkpoint)
    for k in range(values.shape[0]):
        stayed.update(ids, values[k], ts[k])
    step = ts[-1] - ts[-2]
    nxt = values[-1] + 0.01 * scale
    a = moved.update(ids, nxt, ts[-1] + step)
    b = stayed.update(ids, nxt, ts[-1] + step)
    err = float(np.max(np.abs(a - b) / scale))
    report.check("aarch64 checkpoint continues on x86-64", bool(np.all(np.isfinite(a))) and err <= TOL, f"{err:.2e}")


if __name__ == "__main__":
    sys.exit(main())
