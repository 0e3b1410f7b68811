"""Simulator throughput in-process: stream-steps per second for 1, 100 and 10,000 streams.

A stream-step is one reading of one stream through the daemon's path: payload bytes ->
``Worker.submit`` (topic -> stream, parse, queue) -> ``Worker.process_available``
(batched ``pool.update_detailed``, the GRU step, ``encode_forecast``, publish to a
collector). For reference the same readings also go through the bare ``StreamPool``
(no payloads, no queue). Timed: the transport's run only, not building the readings.

    .venv/bin/python benchmarks/simulator_throughput.py [--backend numba] [--json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import edge_gru
from sim.clock import SimClock
from sim.config import SimConfig, default_model_path
from sim.run import build_run
from sim.transport import InProcessTransport, PoolTransport

# (streams, steps per stream): about 20k-200k readings each, a few seconds per row
CASES = ((1, 20_000), (100, 400), (10_000, 12))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", default="numba")
    parser.add_argument("--model", default=None)
    parser.add_argument("--repeat", type=int, default=2, help="runs per case; the best is reported")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    model = edge_gru.load(args.model or default_model_path(), backend=args.backend)
    rows = []
    for streams, steps in CASES:
        cfg = SimConfig(streams=streams, period_s=60.0, duration_s=60.0 * steps, seed=0)
        t = time.perf_counter()
        schedule = build_run(cfg)
        build_s = time.perf_counter() - t
        n = len(schedule)
        best: dict[str, float] = {}
        for name, transport in (("worker", InProcessTransport(model)), ("pool", PoolTransport(model))):
            for _ in range(args.repeat):
                out = transport.run(schedule, SimClock())
                assert out.received == n
                best[name] = min(best.get(name, float("inf")), out.wall_s)
        rows.append(
            {
                "streams": streams,
                "steps": steps,
                "readings": n,
                "build_s": round(build_s, 3),
                "worker_steps_per_s": round(n / best["worker"]),
                "pool_steps_per_s": round(n / best["pool"]),
            }
        )
    meta = {
        "backend": model.backend_name,
        "model": model.id,
        "machine": platform.machine(),
        "python": platform.python_version(),
    }
    if args.json:
        print(json.dumps({**meta, "cases": rows}, indent=2))
        return
    print(f"simulator throughput, in-process, backend {meta['backend']}, model {meta['model']}, {meta['machine']}")
    print(f"{'streams':>8} {'steps':>7} {'readings':>9} {'daemon path/s':>14} {'bare pool/s':>12} {'build s':>8}")
    for r in rows:
        print(
            f"{r['streams']:>8,} {r['steps']:>7,} {r['readings']:>9,} {r['worker_steps_per_s']:>14,} "
            f"{r['pool_steps_per_s']:>12,} {r['build_s']:>8.2f}"
        )


if __name__ == "__main__":
    main()
