"""The daemon's per-reading path without MQTT: ``Worker.submit`` + ``process_available``.

Not a test: it measures (and with ``--profile`` prints a cProfile of) the Python work
between paho's callback and the pool, for one-reading messages and for SenML packs.

    .venv/bin/python benchmarks/worker_hot_path.py --streams 1000 --readings 200000
    .venv/bin/python benchmarks/worker_hot_path.py --profile
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import time

import edge_gru
from edge_gru.daemon.config import StreamsConfig
from edge_gru.daemon.worker import Worker
from edge_gru.harness import DEFAULT_MODEL

TS0 = 1_700_000_000.0


class Sink:
    """A publisher that keeps nothing (the MQTT client's cost is not measured here)."""

    n = 0

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        self.n += 1


def messages(streams: int, readings: int, pack: int) -> list[tuple[str, bytes]]:
    """One reading per message on ``in/s<i>/value``, or SenML packs of ``pack`` records on ``senml/g<j>``."""
    rows = [(i % streams, TS0 + i // streams, 20.0 + (i % 13) * 0.01) for i in range(readings)]
    if pack <= 1:
        return [(f"in/s{i}/value", b'{"value":%.4f,"ts":%.1f}' % (v, t)) for i, t, v in rows]
    out = []
    for start in range(0, readings, pack):
        chunk = rows[start : start + pack]
        recs = [{"bn": "s", "bt": chunk[0][1]}] + [{"n": str(i), "v": v, "t": t - chunk[0][1]} for i, t, v in chunk]
        recs[1].update(recs.pop(0))
        out.append((f"senml/g{start // pack}", json.dumps(recs, separators=(",", ":")).encode()))
    return out


def run(model: edge_gru.Model, streams: int, readings: int, pack: int, profile: bool) -> dict[str, float]:
    settings = StreamsConfig(
        input=("in/{stream}/value",),
        senml_input=("senml/+",),
        max_streams=streams,
        queue_size=readings + 1,
        batch_size=512,
    )
    sink = Sink()
    worker = Worker(model=model, publisher=sink, settings=settings)
    warm = messages(streams, streams * (model.manifest.warmup + 1), pack)
    for topic, payload in warm:
        worker.submit(topic, payload, received=0.0)
    while worker.process_available():
        pass
    msgs = [(t, p.replace(b"1700000", b"1800000")) for t, p in messages(streams, readings, pack)]
    prof = cProfile.Profile() if profile else None
    t0, c0 = time.perf_counter(), time.process_time()
    if prof:
        prof.enable()
    for k, (topic, payload) in enumerate(msgs):
        worker.submit(topic, payload, received=1.0)
        if k % 64 == 63:
            worker.process_available()
    while worker.process_available():
        pass
    if prof:
        prof.disable()
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    if prof:
        pstats.Stats(prof).sort_stats("tottime").print_stats(18)
    return {
        "pack": pack,
        "readings_per_s": round(readings / dt),
        "wall_us_per_reading": round(dt / readings * 1e6, 2),
        "cpu_us_per_reading": round(cpu / readings * 1e6, 2),  # robust on a shared machine
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(DEFAULT_MODEL))
    ap.add_argument("--backend", default="numba")
    ap.add_argument("--streams", type=int, default=1000)
    ap.add_argument("--readings", type=int, default=100_000)
    ap.add_argument("--packs", default="1,50")
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    model = edge_gru.load(args.model, backend=args.backend)
    for pack in (int(p) for p in args.packs.split(",")):
        print(json.dumps(run(model, args.streams, args.readings, pack, args.profile)))


if __name__ == "__main__":
    main()
