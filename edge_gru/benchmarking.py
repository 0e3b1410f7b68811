"""Side-by-side measurements of every installed backend on one bundle (``edge-gru bench``).

What is measured, per backend (numba JIT, numba ahead-of-time, numpy, LiteRT float,
LiteRT int8, Keras):

* ``single_ns``: one step of one stream through the raw kernel, Python call included
  (LiteRT: ``set_tensor`` x2 + ``invoke`` + ``get_tensor`` x2 on a batch-1 interpreter);
* ``pool_single_ns``: one ``pool.update`` of one stream (parsing, normalization, rules);
* ``batched``: stream-steps per second through the raw batched step at S = 1, 64, 1024,
  10,000 (LiteRT: the step model with its batch dimension resized to S);
* ``pool_batched``: stream-steps per second through ``pool.update`` at S = 1024;
* in a fresh subprocess each: ``import_ms`` (the runtime's import), ``first_step_ms``
  (load the bundle, first forecast) with a cold and a warm kernel cache, and
  ``rss_mib`` after load and after serving 100 streams.

Timings are the best of several short bursts (as :mod:`timeit` advises), measured by
default on this process's CPU clock (``time.process_time``: all its threads, none of the
time other processes hold the core), so a busy shared machine does not inflate them;
``clock="wall"`` uses ``time.perf_counter`` instead.
"""

from __future__ import annotations

import gc
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from edge_gru.bundle import STEP_F32, STEP_INT8, Bundle, load_bundle

BATCH_SIZES = (1, 64, 1024, 10_000)
POOL_BATCH = 1024
SERVE_STREAMS = 100
BACKENDS = ("numba-jit", "numba-aot", "numpy", "litert", "litert-int8", "keras")


@dataclass
class BackendResult:
    """One backend's row; None where a figure does not apply or could not be measured."""

    backend: str
    available: bool
    note: str = ""
    single_ns: float | None = None
    pool_single_ns: float | None = None
    batched: dict[int, float] = field(default_factory=dict)  # S -> stream-steps/s
    pool_batched: float | None = None
    import_ms: float | None = None
    first_step_cold_ms: float | None = None
    first_step_warm_ms: float | None = None
    rss_after_load_mib: float | None = None
    rss_serving_mib: float | None = None


CLOCKS: dict[str, Callable[[], float]] = {"cpu": time.process_time, "wall": time.perf_counter}
_clock: list[Callable[[], float]] = [time.process_time]


def set_clock(name: str) -> None:
    """``cpu`` (default: this process's CPU time) or ``wall`` (elapsed time)."""
    _clock[0] = CLOCKS[name]


def best_ns(fn: Callable[[], object], *, burst_s: float = 0.004, repeats: int = 25, max_total_s: float = 3.0) -> float:
    """Nanoseconds per call: the fastest of ``repeats`` bursts of about ``burst_s`` (wall clock) each."""
    clock = _clock[0]
    fn()
    n = 1
    while True:  # calls per burst, sized on the wall clock (a sleeping call costs no CPU time)
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        dt = time.perf_counter() - t0
        if dt >= burst_s or n >= 1 << 22:
            break
        n = max(n * 2, int(n * burst_s / max(dt, 1e-9)))
    best = float("inf")
    deadline = time.perf_counter() + max_total_s
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeats):
            t0 = clock()
            for _ in range(n):
                fn()
            best = min(best, (clock() - t0) / n)
            if time.perf_counter() > deadline:
                break
    finally:
        if gc_was:
            gc.enable()
    return best * 1e9


def machine_info() -> dict[str, Any]:
    """CPU model, cores, load and the versions that decide the figures."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions: dict[str, str | None] = {}
    for package in ("numpy", "numba", "llvmlite", "ai-edge-litert", "tensorflow", "keras"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    try:
        load = list(os.getloadavg())
    except OSError:
        load = None
    return {
        "cpu": cpu,
        "machine": platform.machine(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_average": load,
        "python": platform.python_version(),
        "os": platform.platform(),
        "versions": versions,
    }


# -- in-process timings ---------------------------------------------------------------------------


def _inputs(bundle: Bundle, s: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    m = bundle.manifest
    x = rng.normal(0, 1, (s, m.input_features)).astype(np.float32)
    h = rng.normal(0, 0.3, (s, m.units)).astype(np.float32)
    return x, h


def _pool_timings(bundle_path: Path, backend: Any, result: BackendResult) -> None:
    from edge_gru.model import Model

    model = Model(load_bundle(bundle_path), backend)
    pool = model.pool(max(POOL_BATCH, 1))
    ts = [1e9]
    ids1 = ["stream-0"]

    def one() -> None:
        ts[0] += 60.0
        pool.update(ids1, [20.0 + np.sin(ts[0])], [ts[0]])

    result.pool_single_ns = best_ns(one)
    ids = [f"stream-{i}" for i in range(POOL_BATCH)]
    values = 20 + np.sin(np.arange(POOL_BATCH, dtype=float))

    def many() -> None:
        ts[0] += 60.0
        pool.update(ids, values, np.full(POOL_BATCH, ts[0]))

    result.pool_batched = POOL_BATCH / best_ns(many, repeats=15) * 1e9


def _numba_timings(bundle: Bundle, kind: str, result: BackendResult) -> None:
    from edge_gru.backends.numba_backend import NumbaBackend
    from edge_gru.kernel_layout import tile_scratch_size

    backend = NumbaBackend(bundle, kernels=kind)
    result.note = f"kernels: {backend.kernel_kind}"
    kernel, packed, state, reset_after = backend.single_stream()
    x1 = np.ones(bundle.manifest.input_features, np.float32)
    result.single_ns = best_ns(lambda: kernel(packed, x1, state, reset_after))
    batch = backend._kernels.gru_step_batch
    scratch = np.zeros(tile_scratch_size(backend.units, backend.features), np.float32)
    for s in BATCH_SIZES:
        x, h = _inputs(bundle, s)
        rows = np.arange(s, dtype=np.int64)
        y = np.zeros(s, np.float32)
        ns = best_ns(partial(batch, packed, x, h, rows, scratch, y, reset_after), repeats=15)
        result.batched[s] = s / ns * 1e9
    _pool_timings(bundle.path, backend, result)


def _numpy_timings(bundle: Bundle, result: BackendResult) -> None:
    from edge_gru import reference
    from edge_gru.backends.numpy_backend import NumpyBackend

    w = bundle.weights
    x1, h1 = _inputs(bundle, 1)
    result.single_ns = best_ns(lambda: reference.gru_step(w, x1, h1))
    for s in BATCH_SIZES:
        x, h = _inputs(bundle, s)
        result.batched[s] = s / best_ns(partial(reference.gru_step, w, x, h), repeats=15) * 1e9
    _pool_timings(bundle.path, NumpyBackend(bundle), result)


def _litert_interpreter(path: Path, batch: int, features: int, units: int) -> tuple[Any, Callable[[], object]]:
    """An interpreter for ``batch`` rows and a closure doing set + set + invoke + get + get."""
    from ai_edge_litert.interpreter import Interpreter

    probe = Interpreter(model_path=str(path), num_threads=1)
    runner = probe.get_signature_runner()
    inputs, outputs = runner.get_input_details(), runner.get_output_details()
    ix, ih = int(inputs["x_t"]["index"]), int(inputs["h_prev"]["index"])
    oy, oh = int(outputs["y"]["index"]), int(outputs["h_t"]["index"])
    dx, dh = inputs["x_t"]["dtype"], inputs["h_prev"]["dtype"]
    del runner, probe
    it = Interpreter(model_path=str(path), num_threads=1)
    it.resize_tensor_input(ix, [batch, features], strict=False)
    it.resize_tensor_input(ih, [batch, units], strict=False)
    it.allocate_tensors()
    x = np.zeros((batch, features), dx)
    h = np.zeros((batch, units), dh)

    def step() -> object:
        it.set_tensor(ix, x)
        it.set_tensor(ih, h)
        it.invoke()
        it.get_tensor(oy)
        return it.get_tensor(oh)

    return it, step


def _litert_timings(bundle: Bundle, int8: bool, result: BackendResult) -> None:
    from edge_gru.backends import create_backend

    filename = STEP_INT8 if int8 else STEP_F32
    path = bundle.file(filename)
    if path is None:
        result.available = False
        result.note = f"the bundle has no {filename}"
        return
    if importlib.util.find_spec("ai_edge_litert") is None:
        result.available = False
        result.note = "ai-edge-litert is not installed"
        return
    m = bundle.manifest
    _, step = _litert_interpreter(path, 1, m.input_features, m.units)
    result.single_ns = best_ns(step)
    for s in BATCH_SIZES:
        _, step = _litert_interpreter(path, s, m.input_features, m.units)
        result.batched[s] = s / best_ns(step, repeats=15) * 1e9
    backend = create_backend("tflite-int8" if int8 else "tflite", bundle)
    result.note = f"{filename}, {getattr(backend, 'runtime', '')}"
    _pool_timings(bundle.path, backend, result)


def _keras_model(bundle: Bundle, batch: int) -> Any:
    import keras

    m, w = bundle.manifest, bundle.weights
    model = keras.Sequential(
        [
            keras.Input(batch_shape=(batch, 1, m.input_features)),
            keras.layers.GRU(m.units, stateful=True, reset_after=m.reset_after),
            keras.layers.Dense(1),
        ]
    )
    model.layers[0].set_weights([w.kernel, w.recurrent_kernel, w.bias])
    model.layers[1].set_weights([w.dense_kernel, w.dense_bias])
    return model


def _keras_timings(bundle: Bundle, result: BackendResult) -> None:
    """Keras 3 stateful GRU + Dense(1), one call per step (eager ``model(x)``)."""
    m = bundle.manifest
    model = _keras_model(bundle, 1)
    x1 = np.zeros((1, 1, m.input_features), np.float32)
    result.single_ns = best_ns(lambda: model(x1, training=False), burst_s=0.02, repeats=5, max_total_s=5)
    for s in BATCH_SIZES:
        model = _keras_model(bundle, s)
        x = np.zeros((s, 1, m.input_features), np.float32)
        ns = best_ns(partial(model, x, training=False), burst_s=0.02, repeats=5, max_total_s=5)
        result.batched[s] = s / ns * 1e9
    import keras

    result.note = f"keras {keras.__version__} ({keras.backend.backend()}), eager model(x) per step"


def measure_in_process(backend: str, bundle_path: Path) -> BackendResult:
    """Timings of one backend in this process (throughput and per-call figures)."""
    bundle = load_bundle(bundle_path)
    result = BackendResult(backend, available=True)
    try:
        if backend == "numba-jit":
            _numba_timings(bundle, "jit", result)
        elif backend == "numba-aot":
            _numba_timings(bundle, "aot", result)
        elif backend == "numpy":
            _numpy_timings(bundle, result)
        elif backend in ("litert", "litert-int8"):
            _litert_timings(bundle, backend == "litert-int8", result)
        elif backend == "keras":
            _keras_timings(bundle, result)
        else:
            raise ValueError(f"unknown backend {backend!r}")
    except ImportError as exc:
        result.available = False
        result.note = f"not installed ({exc})"
    except Exception as exc:  # a backend that cannot run is reported, not fatal for the others
        from edge_gru.errors import BackendUnavailableError

        if not isinstance(exc, BackendUnavailableError):
            raise
        result.available = False
        result.note = str(exc).split(";")[0]
    return result


# -- fresh-process figures ------------------------------------------------------------------------

_PROBE = r"""
import json, os, sys, time
t0 = time.perf_counter()
backend, bundle_path, streams = sys.argv[1], sys.argv[2], int(sys.argv[3])
def rss():
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return None
out = {}
i0 = time.perf_counter()
if backend == "numba-jit":
    from edge_gru import kernels  # noqa: F401  (imports numba)
elif backend == "numba-aot":
    from edge_gru import aot
    if aot.load_kernels() is None:
        raise SystemExit("no compiled kernels")
elif backend in ("litert", "litert-int8"):
    from ai_edge_litert.interpreter import Interpreter  # noqa: F401
elif backend == "keras":
    import keras  # noqa: F401
else:
    import numpy  # noqa: F401
out["import_ms"] = (time.perf_counter() - i0) * 1e3
import numpy as np
import edge_gru
s0 = time.perf_counter()
names = {"numba-jit": "numba", "numba-aot": "numba", "litert": "tflite", "litert-int8": "tflite-int8"}
name = names.get(backend, backend)
if backend == "keras":
    from edge_gru.benchmarking import _keras_model
    from edge_gru.bundle import load_bundle
    b = load_bundle(bundle_path)
    model = _keras_model(b, 1)
    model(np.zeros((1, 1, b.manifest.input_features), np.float32))
    out["first_step_ms"] = (time.perf_counter() - s0) * 1e3
    out["rss_after_load_mib"] = rss()
else:
    model = edge_gru.load(bundle_path, backend=name)
    pool = model.pool(max(streams, 1))
    pool.update(["first"], [1.0], [1e9])
    out["first_step_ms"] = (time.perf_counter() - s0) * 1e3
    out["rss_after_load_mib"] = rss()
    ids = [f"s{i}" for i in range(streams)]
    for t in range(100):
        pool.update(ids, 20 + np.sin(np.arange(streams) + t), np.full(streams, 1e9 + 60.0 * (t + 1)))
    out["rss_serving_mib"] = rss()
    out["kernel_kind"] = getattr(model.backend, "kernel_kind", None)
heavy = ("numba", "llvmlite", "tensorflow")
out["heavy_modules"] = sorted({m.split(".")[0] for m in sys.modules if m.split(".")[0] in heavy})
print("PROBE" + json.dumps(out))
"""


def probe_process(backend: str, bundle_path: Path, *, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Import, load and first step of ``backend`` in a fresh interpreter; its figures as a dict."""
    full_env = {**os.environ, **(env or {})}
    full_env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if backend == "numba-jit":
        full_env["EDGE_GRU_KERNELS"] = "jit"
    elif backend == "numba-aot":
        full_env["EDGE_GRU_KERNELS"] = "aot"
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, backend, str(bundle_path), str(SERVE_STREAMS)],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("PROBE"):
            return dict(json.loads(line[5:]))
    raise RuntimeError(f"{backend}: probe failed: {(proc.stderr or proc.stdout).strip()[-400:]}")


def measure_processes(backend: str, bundle_path: Path, result: BackendResult, *, cold: bool = True) -> None:
    """Fill import time, first-step times (cold and warm cache) and RSS from fresh subprocesses."""
    env: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="edge-gru-bench-") as fresh:
        if backend == "numba-jit" and cold:
            env = {"NUMBA_CACHE_DIR": fresh}
            result.first_step_cold_ms = probe_process(backend, bundle_path, env=env)["first_step_ms"]
        warm = probe_process(backend, bundle_path, env=env)  # cache filled by the cold run (or already warm)
        if backend == "numba-jit" and not cold:
            warm = probe_process(backend, bundle_path, env=env)
    if backend != "numba-jit":
        result.first_step_cold_ms = warm["first_step_ms"]  # nothing to compile: cold equals warm
    result.import_ms = warm["import_ms"]
    result.first_step_warm_ms = warm["first_step_ms"]
    result.rss_after_load_mib = warm.get("rss_after_load_mib")
    result.rss_serving_mib = warm.get("rss_serving_mib")
    if warm.get("heavy_modules"):
        result.note = (result.note + "; " if result.note else "") + "loads " + ", ".join(warm["heavy_modules"])


def available_backends() -> list[str]:
    """The backends this installation can run (the bundle may still lack LiteRT files)."""
    out = []
    if importlib.util.find_spec("numba") is not None:
        out.append("numba-jit")
    from edge_gru import aot

    if aot.load_kernels() is not None:
        out.append("numba-aot")
    out.append("numpy")
    if importlib.util.find_spec("ai_edge_litert") is not None:
        out += ["litert", "litert-int8"]
    if importlib.util.find_spec("keras") is not None and importlib.util.find_spec("tensorflow") is not None:
        out.append("keras")
    return out


def run(
    bundle_path: Path,
    backends: list[str] | None = None,
    *,
    processes: bool = True,
    cold: bool = True,
    clock: str = "cpu",
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """The whole benchmark: machine, bundle and one row per backend, as a JSON-ready dict."""
    set_clock(clock)
    bundle = load_bundle(bundle_path)
    wanted = backends or list(BACKENDS)
    installed = available_backends()
    rows = []
    for name in wanted:
        if name not in installed:
            why = {
                "numba-aot": "no compiled kernels match this machine (run edge-gru build-kernels)",
                "keras": "tensorflow/keras not installed",
            }.get(name, "not installed")
            rows.append(BackendResult(name, available=False, note=why))
            continue
        if progress:
            progress(name)
        result = measure_in_process(name, bundle.path)
        if result.available and processes:
            measure_processes(name, bundle.path, result, cold=cold)
        rows.append(result)
    m = bundle.manifest
    return {
        "machine": machine_info(),
        "bundle": {
            "path": str(bundle.path),
            "id": bundle.id,
            "units": m.units,
            "input_features": m.input_features,
            "reset_after": m.reset_after,
            "files": sorted(m.files),
        },
        "clock": clock,
        "batch_sizes": list(BATCH_SIZES),
        "serve_streams": SERVE_STREAMS,
        "results": [asdict(r) for r in rows],
    }


def format_table(report: dict[str, Any]) -> str:
    """The report as aligned text for people."""

    def num(value: float | None, unit: str = "", scale: float = 1.0, digits: int = 0) -> str:
        if value is None:
            return "-"
        return f"{value / scale:,.{digits}f}{unit}"

    head = [
        "backend",
        "step ns",
        "pool ns",
        *[f"S={s:,} M/s" for s in report["batch_sizes"]],
        f"pool S={POOL_BATCH} M/s",
        "import ms",
        "1st cold ms",
        "1st warm ms",
        "RSS load MiB",
        f"RSS {report['serve_streams']} str MiB",
    ]
    lines = []
    for r in report["results"]:
        if not r["available"]:
            lines.append([r["backend"], f"(unavailable: {r['note']})"])
            continue
        batched = {int(k): v for k, v in r["batched"].items()}
        lines.append(
            [
                r["backend"],
                num(r["single_ns"]),
                num(r["pool_single_ns"]),
                *[num(batched.get(s), scale=1e6, digits=2) for s in report["batch_sizes"]],
                num(r["pool_batched"], scale=1e6, digits=2),
                num(r["import_ms"], digits=0),
                num(r["first_step_cold_ms"], digits=0),
                num(r["first_step_warm_ms"], digits=0),
                num(r["rss_after_load_mib"], digits=1),
                num(r["rss_serving_mib"], digits=1),
            ]
        )
    widths = [max(len(head[i]), *(len(row[i]) for row in lines if len(row) == len(head))) for i in range(len(head))]
    out = ["  ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(zip(head, widths, strict=True)))]
    for row in lines:
        if len(row) != len(head):
            out.append(f"{row[0].ljust(widths[0])}  {row[1]}")
        else:
            out.append(
                "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
            )
    mach = report["machine"]
    v = mach["versions"]
    out.append("")
    out.append(
        f"machine: {mach['cpu']} ({mach['machine']}), {mach['cores_usable']}/{mach['cores']} cores, "
        f"load {', '.join(f'{x:.1f}' for x in mach['load_average'] or [])}; python {mach['python']}, "
        f"numpy {v['numpy']}, numba {v['numba']}, ai-edge-litert {v['ai-edge-litert']}"
    )
    b = report["bundle"]
    out.append(f"bundle: {b['path']} ({b['id']}), GRU({b['units']}) on {b['input_features']} input(s)")
    out.append(f"clock: {report['clock']} (best of several bursts); M/s = million stream-steps per second")
    notes = [f"  {r['backend']}: {r['note']}" for r in report["results"] if r["available"] and r["note"]]
    if notes:
        out.append("notes:")
        out += notes
    return "\n".join(out)
