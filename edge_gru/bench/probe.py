"""One backend in a fresh interpreter: import time, first forecast, resident memory.

Run by :func:`edge_gru.bench.measure.probe_process` as a file (``runpy.run_path``), not as
``-m edge_gru.bench.probe``, so nothing of edge-gru or numpy is imported before the
runtime's import is timed. Prints one line ``PROBE{json}``.

Arguments: ROW BACKEND VARIANT RUNTIME BUNDLE STREAMS, where BACKEND is a registry name
(or ``keras``), VARIANT a kernel kind or ``-``, and RUNTIME the module to import (``-``: numpy).
"""

from __future__ import annotations

import importlib
import json
import sys
import time


def main(argv: list[str]) -> None:
    row, backend, variant, runtime, bundle_path, streams_arg = argv
    streams = int(streams_arg)
    out: dict[str, object] = {}
    i0 = time.perf_counter()
    if variant == "aot":
        from edge_gru import aot

        if aot.load_kernels() is None:
            raise SystemExit("no compiled kernels")
    elif variant == "jit":
        importlib.import_module("edge_gru.kernels")  # numba and the kernels' definitions, as the backend does
    else:
        importlib.import_module("numpy" if runtime == "-" else runtime)
    out["import_ms"] = (time.perf_counter() - i0) * 1e3

    import numpy as np

    import edge_gru
    from edge_gru.procstat import memory_mib

    def rss() -> float | None:
        return memory_mib().get("VmRSS")

    s0 = time.perf_counter()
    if backend == "keras":
        from edge_gru.bench.measure import keras_model
        from edge_gru.bundle import load_bundle

        b = load_bundle(bundle_path)
        model = keras_model(b, 1)
        model(np.zeros((1, 1, b.manifest.input_features), np.float32))
        out["first_step_ms"] = (time.perf_counter() - s0) * 1e3
        out["rss_after_load_mib"] = rss()
    else:
        served = edge_gru.load(bundle_path, backend=backend)
        pool = served.pool(max(streams, 1))
        pool.update(["first"], [1.0], [1e9])
        out["first_step_ms"] = (time.perf_counter() - s0) * 1e3
        out["rss_after_load_mib"] = rss()
        ids = [f"s{i}" for i in range(streams)]
        for t in range(100):
            pool.update(ids, 20 + np.sin(np.arange(streams) + t), np.full(streams, 1e9 + 60.0 * (t + 1)))
        out["rss_serving_mib"] = rss()
        out["kernel_kind"] = getattr(served.backend, "kernel_kind", None)
    heavy = ("numba", "llvmlite", "tensorflow")
    out["heavy_modules"] = sorted({m.split(".")[0] for m in sys.modules if m.split(".")[0] in heavy})
    out["row"] = row
    print("PROBE" + json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])
