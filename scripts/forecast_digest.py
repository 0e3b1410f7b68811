"""A digest of every backend's forecasts on the shipped series, through the pool and the daemon's Worker.

For refactors that must not change behaviour: run it before and after (same machine) and
compare the digests; ``OUT.npz`` keeps the pool's forecasts for a closer look.

    PYTHONPATH=$PWD .venv/bin/python scripts/forecast_digest.py OUT.npz
"""

from __future__ import annotations

import hashlib
import json
import sys
from typing import Any

import numpy as np

import edge_gru
from edge_gru.backends import BACKENDS
from edge_gru.daemon.config import StreamsConfig
from edge_gru.daemon.worker import Worker
from edge_gru.series import read_series

SERIES = [
    ("tests/data/taylor_electricity_30min.csv", "demand_MW"),
    ("tests/data/sst_neracoos_b01_30min.csv", "temperature"),
    ("tests/data/beijing_pm25_weather_hourly.csv", "pm2.5"),
    ("tests/data/beijing_pm25_weather_hourly.csv", "TEMP"),
]


class Pub:
    def __init__(self) -> None:
        self.m: list[tuple[str, bytes]] = []

    def publish(self, t: str, p: bytes, *, qos: int = 1, retain: bool = False) -> None:
        self.m.append((t, p))


class Clock:
    def __init__(self) -> None:
        self.now = 1.7e9

    def __call__(self) -> float:
        return self.now


def main(out: str) -> None:
    data = [read_series(p, column=c) for p, c in SERIES]
    times = []
    for s in data:
        assert s.times is not None
        times.append(s.times)
    h = hashlib.sha256()
    res: dict[str, Any] = {}
    for backend in BACKENDS:
        model = edge_gru.load("models/default", backend=backend)
        pool = model.pool(100)
        for k, s in enumerate(data):
            n = min(len(s), 6000)
            ids = [f"s{k}"] * n
            r = pool.update_detailed(ids, s.values[:n, 0], times[k][:n], now=0.0)
            for a in (r.forecasts, r.status, r.forecast_ts, r.resets):
                h.update(np.ascontiguousarray(a).tobytes())
            res[f"{backend}/pool/{k}"] = r.forecasts
        # worker: interleave streams, every 7th reading without ts, plain numbers
        for urt in (False, True):
            t = Clock()
            pub = Pub()
            settings = StreamsConfig(use_receive_time=urt, idle_timeout_s=None)
            w = Worker(model=model, publisher=pub, settings=settings, clock=t)
            for i in range(3000):
                for k, s in enumerate(data):
                    v = s.values[i, 0]
                    if i % 7 == 3:
                        payload = repr(float(v)).encode()
                    else:
                        payload = json.dumps({"value": None if v != v else float(v), "ts": float(times[k][i])}).encode()
                    w.submit(f"sensors/st{k}/value", payload, received=t.now)
                t.now += 60.0
                if i % 5 == 4:
                    while w.process_available():
                        pass
            while w.process_available():
                pass
            for topic, p in pub.m:
                h.update(topic.encode())
                h.update(p)
            drops = {str(k): v for k, v in sorted(w.stats.dropped.items())}
            h.update(json.dumps(drops).encode())
            print(backend, urt, len(pub.m), drops)
    print("digest", h.hexdigest())
    np.savez(out, **res)


if __name__ == "__main__":
    main(sys.argv[1])
