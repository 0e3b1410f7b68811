"""Per-reading cost of the per-stream adaptation beside the GRU step (numba backend).

For batches of S streams (one reading each per call, as the daemon's worker batches them),
times the backend's bare ``step`` on the batch, the adaptation's two phases alone
(``Adapter.observe`` + ``Adapter.forecast``, compiled as the numba backend runs them), and
``pool.update_detailed`` end to end with the adaptation off and on (best of 5 runs each;
the difference of the last two is noisy on a shared machine):

    PYTHONPATH=. .venv/bin/python benchmarks/adaptation_cost.py [--streams 1,64,512,4096] [--json]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import edge_gru  # noqa: E402
from edge_gru.adaptation import OFF, AdaptationSpec  # noqa: E402


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _time_pool(model: edge_gru.Model, spec: AdaptationSpec, s: int, calls: int) -> float:
    """Seconds per call of update_detailed for S streams, after warm-up."""
    rng = np.random.default_rng(0)
    ids = [f"s{k}" for k in range(s)]
    pool = model.pool(max_streams=s, adaptation=spec)
    x = 20 + np.cumsum(rng.normal(size=(calls + 50, s)), axis=0)
    for i in range(50):  # past warm-up: every stream forecasts
        pool.update_detailed(ids, x[i], np.full(s, 60.0 * i), now=60.0 * i)
    best = np.inf
    for rep in range(5):
        t0 = time.perf_counter()
        for i in range(50, 50 + calls):
            ts = 60.0 * (i + rep * calls)
            pool.update_detailed(ids, x[i], np.full(s, ts), now=ts)
        best = min(best, (time.perf_counter() - t0) / calls)
    return best


def _time_step(model: edge_gru.Model, s: int, calls: int) -> float:
    units = model.manifest.state_size
    h = np.zeros((s, units), dtype=np.float32)
    rows = np.arange(s)
    z = np.random.default_rng(0).normal(size=(s, 1)).astype(np.float32)
    model.backend.step(z, h, rows)
    best = np.inf
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(calls):
            model.backend.step(z, h, rows)
        best = min(best, (time.perf_counter() - t0) / calls)
    return best


def _time_adapter(s: int, calls: int) -> float:
    """Seconds per call of the adaptation's two phases for S streams, compiled."""
    from edge_gru.adaptation import Adapter

    adapter = Adapter(AdaptationSpec())
    adapter.grow(s)
    adapter.compile()
    rng = np.random.default_rng(0)
    rows = np.arange(s)
    x = 20 + np.cumsum(rng.normal(size=(calls + 50, s)), axis=0)
    for i in range(50):
        adapter.observe(rows, x[i])
        adapter.forecast(rows, x[i], x[i] + 0.1)
    best = np.inf
    for _ in range(5):
        t0 = time.perf_counter()
        for i in range(50, 50 + calls):
            adapter.observe(rows, x[i])
            adapter.forecast(rows, x[i], x[i] + 0.1)
        best = min(best, (time.perf_counter() - t0) / calls)
    return best


def measure(streams: list[int], model_dir: str) -> list[dict[str, Any]]:
    model = edge_gru.load(model_dir, backend="numba")
    out = []
    for s in streams:
        calls = max(20, min(2000, 200_000 // s))
        off = _time_pool(model, OFF, s, calls)
        on = _time_pool(model, AdaptationSpec(), s, calls)
        step = _time_step(model, s, calls)
        adapt = _time_adapter(s, calls)
        out.append(
            {
                "streams": s,
                "step_us_per_reading": step / s * 1e6,
                "adaptation_us_per_reading": adapt / s * 1e6,
                "adaptation_over_step": adapt / step,
                "pool_off_us_per_reading": off / s * 1e6,
                "pool_on_us_per_reading": on / s * 1e6,
            }
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--streams", default="1,64,512,4096")
    ap.add_argument("--model", default=str(ROOT / "models" / "default"))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rows = measure([int(v) for v in args.streams.split(",")], args.model)
    cpu = cpu_name()
    if args.json:
        print(json.dumps({"cpu": cpu, "rows": rows}, indent=2))
        return
    print(f"adaptation cost per reading, numba backend, {cpu}")
    print(f"{'streams':>8}{'step us':>10}{'adapt us':>10}{'adapt/step':>12}{'pool off us':>13}{'pool on us':>12}")
    for r in rows:
        print(
            f"{r['streams']:>8}{r['step_us_per_reading']:>10.3f}{r['adaptation_us_per_reading']:>10.3f}"
            f"{r['adaptation_over_step']:>11.1%}{r['pool_off_us_per_reading']:>13.3f}{r['pool_on_us_per_reading']:>12.3f}"
        )
    print("us per reading; adapt = the adaptation's two phases alone (numba); pool = update_detailed end to end")


if __name__ == "__main__":
    main()
