"""Side-by-side measurements of every installed backend on one bundle (``edge-gru bench``).

The rows are the backend registry's names (numba once per kernel kind: ``numba-jit``,
``numba-aot``) and the Keras reference. What is measured, per row:

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

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from edge_gru.backends import BACKENDS, KERAS_REFERENCE, Backend, create_backend
from edge_gru.bench.timing import best_ns, machine_info, set_clock
from edge_gru.bundle import STEP_F32, STEP_INT8, Bundle, load_bundle
from edge_gru.errors import BackendUnavailableError

BATCH_SIZES = (1, 64, 1024, 10_000)
POOL_BATCH = 1024
SERVE_STREAMS = 100
PROBE = Path(__file__).with_name("probe.py")


def _rows() -> dict[str, tuple[str, str | None]]:
    """Bench row -> (registry backend or the Keras reference, kernel kind or None)."""
    rows: dict[str, tuple[str, str | None]] = {}
    for name, entry in BACKENDS.items():
        for variant in entry.variants or (None,):
            rows[f"{name}-{variant}" if variant else name] = (name, variant)
    rows[KERAS_REFERENCE] = (KERAS_REFERENCE, None)
    return rows


ROWS = _rows()


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


# -- in-process timings ---------------------------------------------------------------------------


def _inputs(bundle: Bundle, s: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    m = bundle.manifest
    x = rng.normal(0, 1, (s, m.input_features)).astype(np.float32)
    h = rng.normal(0, 0.3, (s, m.state_size)).astype(np.float32)
    return x, h


def _pool_timings(bundle_path: Path, backend: Backend, result: BackendResult) -> None:
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

    backend = NumbaBackend(bundle, kernels=kind)
    result.note = f"kernels: {backend.kernel_kind}"
    result.single_ns = best_ns(backend.single_call(np.ones(bundle.manifest.input_features, np.float32)))
    for s in BATCH_SIZES:
        x, h = _inputs(bundle, s)
        ns = best_ns(backend.batch_call(x, h, np.arange(s, dtype=np.int64)), repeats=15)
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


def _litert_interpreter(path: Path, batch: int, features: int, state_size: int) -> tuple[Any, Callable[[], object]]:
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
    it.resize_tensor_input(ih, [batch, state_size], strict=False)
    it.allocate_tensors()
    x = np.zeros((batch, features), dx)
    h = np.zeros((batch, state_size), dh)

    def step() -> object:
        it.set_tensor(ix, x)
        it.set_tensor(ih, h)
        it.invoke()
        it.get_tensor(oy)
        return it.get_tensor(oh)

    return it, step


def _litert_timings(bundle: Bundle, name: str, result: BackendResult) -> None:
    int8 = name == "tflite-int8"
    filename = STEP_INT8 if int8 else STEP_F32
    path = bundle.file(filename)
    if path is None:
        result.available = False
        result.note = f"the bundle has no {filename}"
        return
    if not BACKENDS[name].installed():
        result.available = False
        result.note = f"{BACKENDS[name].runtime} is not installed"
        return
    m = bundle.manifest
    _, step = _litert_interpreter(path, 1, m.input_features, m.state_size)
    result.single_ns = best_ns(step)
    for s in BATCH_SIZES:
        _, step = _litert_interpreter(path, s, m.input_features, m.state_size)
        result.batched[s] = s / best_ns(step, repeats=15) * 1e9
    backend = create_backend(name, bundle)
    result.note = f"{filename}, {getattr(backend, 'runtime', '')}"
    _pool_timings(bundle.path, backend, result)


def keras_model(bundle: Bundle, batch: int) -> Any:
    """The bundle's network as a Keras 3 ``stateful=True`` model, one step per call (the probe builds it too)."""
    from edge_gru.train.networks import stateful_model_of

    return stateful_model_of(bundle.weights, batch=batch, steps=1)


def _keras_timings(bundle: Bundle, result: BackendResult) -> None:
    """The network as Keras 3 stateful layers, one call per step (eager ``model(x)``)."""
    m = bundle.manifest
    model = keras_model(bundle, 1)
    x1 = np.zeros((1, 1, m.input_features), np.float32)
    result.single_ns = best_ns(lambda: model(x1, training=False), burst_s=0.02, repeats=5, max_total_s=5)
    for s in BATCH_SIZES:
        model = keras_model(bundle, s)
        x = np.zeros((s, 1, m.input_features), np.float32)
        ns = best_ns(partial(model, x, training=False), burst_s=0.02, repeats=5, max_total_s=5)
        result.batched[s] = s / ns * 1e9
    import keras

    result.note = f"keras {keras.__version__} ({keras.backend.backend()}), eager model(x) per step"


def measure_in_process(row: str, bundle_path: Path) -> BackendResult:
    """Timings of one row in this process (throughput and per-call figures)."""
    if row not in ROWS:
        raise ValueError(f"unknown bench row {row!r}; choose one of {', '.join(ROWS)}")
    name, variant = ROWS[row]
    bundle = load_bundle(bundle_path)
    result = BackendResult(row, available=True)
    try:
        if name == "numba":
            _numba_timings(bundle, variant or "jit", result)
        elif name == "numpy":
            _numpy_timings(bundle, result)
        elif name in ("tflite", "tflite-int8"):
            _litert_timings(bundle, name, result)
        else:
            _keras_timings(bundle, result)
    except ImportError as exc:
        result.available = False
        result.note = f"not installed ({exc})"
    except BackendUnavailableError as exc:  # a backend that cannot run is reported, not fatal for the others
        result.available = False
        result.note = str(exc).split(";")[0]
    return result


# -- fresh-process figures ------------------------------------------------------------------------


def probe_process(row: str, bundle_path: Path, *, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Import, load and first step of ``row`` in a fresh interpreter (:mod:`edge_gru.bench.probe`)."""
    name, variant = ROWS[row]
    runtime = BACKENDS[name].runtime if name in BACKENDS else "keras"
    full_env = {**os.environ, **(env or {})}
    full_env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if variant:
        full_env["EDGE_GRU_KERNELS"] = variant
    # run as a file, so nothing of edge-gru (or numpy) is imported before the runtime's import is timed
    code = "import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
    args = [row, name, variant or "-", runtime or "-", str(bundle_path), str(SERVE_STREAMS)]
    proc = subprocess.run(
        [sys.executable, "-c", code, str(PROBE), *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("PROBE"):
            return dict(json.loads(line[5:]))
    raise RuntimeError(f"{row}: probe failed: {(proc.stderr or proc.stdout).strip()[-400:]}")


def measure_processes(backend: str, bundle_path: Path, result: BackendResult, *, cold: bool = True) -> None:
    """Fill import time, first-step times (cold and warm cache) and RSS from fresh subprocesses."""
    env: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="edge-gru-bench-") as fresh:
        if backend == "numba-jit" and cold:  # the JIT row: compile into an empty cache first
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
    """The rows this installation can run (the bundle may still lack LiteRT files)."""
    import importlib.util

    from edge_gru import aot

    out = []
    for row, (name, variant) in ROWS.items():
        if name == KERAS_REFERENCE:
            if importlib.util.find_spec("keras") is not None and importlib.util.find_spec("tensorflow") is not None:
                out.append(row)
        elif variant == "aot":
            if aot.load_kernels() is not None:
                out.append(row)
        elif BACKENDS[name].installed():
            out.append(row)
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
    wanted = backends or list(ROWS)
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
            "network": m.network.describe(),
            "layers": m.network.to_json(),
            "state_size": m.state_size,
            "horizon": m.horizon,
            "input_features": m.input_features,
            "files": sorted(m.files),
        },
        "clock": clock,
        "batch_sizes": list(BATCH_SIZES),
        "serve_streams": SERVE_STREAMS,
        "results": [asdict(r) for r in rows],
    }
