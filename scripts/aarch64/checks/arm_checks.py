"""Checks that run inside the emulated Raspberry Pi root (and natively, as a control).

Runs against the *installed* edge-gru (a wheel with the ``device`` extra: numpy, numba,
paho-mqtt, LiteRT) and never imports Keras or TensorFlow: every expected number comes
from ``tests/data/arm_reference.npz``, written on x86-64 by ``scripts/aarch64/make-reference``
from Keras and from the numpy reference kernel.

Subcommands (each prints one line per check and exits 1 when any check fails):

* ``kernels``   the numba kernels (single step, batched step, windows) and the numpy
  reference on random GRUs of both ``reset_after`` kinds, against Keras outputs and the
  x86-64 numpy outputs, to 1e-5.
* ``forecasts`` a backend's stream-pool forecasts of the default bundle over stored
  readings, against the x86-64 forecasts of the same backend, to 1e-5 of each stream's scale;
  statuses must be identical.
* ``timing``    time per GRU step of a backend (information only, no pass/fail).
* ``environment`` what this interpreter runs on, and that TensorFlow is absent.

This file is not collected by pytest: it lives outside the test paths and needs a
reference file and a model bundle named on the command line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

TOL = 1e-5


class Report:
    """Collects pass/fail lines; the process exit status is the verdict."""

    def __init__(self) -> None:
        self.failures = 0
        self.checks = 0

    def check(self, name: str, ok: bool, detail: str) -> None:
        self.checks += 1
        if not ok:
            self.failures += 1
        print(f"  {'ok  ' if ok else 'FAIL'} {name}: {detail}", flush=True)

    def finish(self, what: str) -> int:
        print(f"{what}: {self.checks - self.failures}/{self.checks} checks passed", flush=True)
        return 1 if self.failures or not self.checks else 0


def load_reference(path: str) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def meta(ref: dict[str, np.ndarray]) -> dict[str, Any]:
    return dict(json.loads(str(ref["meta"])))


# --- kernels ---------------------------------------------------------------------------


def _weights(ref: dict[str, np.ndarray], case: str) -> Any:
    from edge_gru.layers import V1_KEYS, from_v1_arrays

    return from_v1_arrays({key: ref[f"{case}.{key}"] for key in V1_KEYS}, where=f"reference case {case}")


def _numpy_sequence(weights: Any, x: np.ndarray) -> np.ndarray:
    from edge_gru import reference

    s, t, _ = x.shape
    h = np.zeros((s, weights.network.state_size), np.float32)
    y = np.empty((s, t), np.float32)
    for k in range(t):
        y[:, k] = reference.gru_step(weights, np.ascontiguousarray(x[:, k, :]), h)[:, 0]
    return y


def _bundle(weights: Any, directory: str) -> Any:
    """A bundle around ``weights``, so the kernels run through the numba backend as the product runs them."""
    from edge_gru.bundle import Manifest, Normalization, write_bundle

    i = weights.network.input_features
    names = tuple(f"f{k}" for k in range(i))
    manifest = Manifest(
        network=weights.network,
        window=1,
        mode="stateful",
        features=names,
        target=names[0],
        normalization=Normalization(
            kind="fixed", input_mean=(0.0,) * i, input_std=(1.0,) * i, target_mean=0.0, target_std=1.0
        ),
        name="arm-check",
    )
    return write_bundle(directory, manifest, weights)


def _numba_batch_sequence(backend: Any, x: np.ndarray, streams: int) -> np.ndarray:
    """Steps for the first ``streams`` streams, batched, each in a scattered row of a larger state."""
    x = x[:streams]
    s, t, _ = x.shape
    rng = np.random.default_rng(streams)
    h = np.zeros((s + 7, backend.state_size), np.float32)
    rows = rng.permutation(s + 7)[:s].astype(np.int64)  # streams live in shuffled rows; 7 rows untouched
    untouched = np.setdiff1d(np.arange(s + 7), rows)
    y = np.empty((s, t), np.float32)
    for k in range(t):
        y[:, k] = backend.step(np.ascontiguousarray(x[:, k, :]), h, rows)[:, 0]
    if np.any(h[untouched] != 0):
        raise AssertionError("the batched step wrote to state rows it was not given")
    return y


def _numba_single_sequence(backend: Any, x: np.ndarray, streams: int) -> np.ndarray:
    s, t, _ = x[:streams].shape
    y = np.empty((s, t), np.float32)
    for i in range(s):
        kernel, packed, state, reset_after = backend.single_stream()
        for k in range(t):
            y[i, k] = kernel(packed, np.ascontiguousarray(x[i, k]), state, reset_after)
    return y


def _close(report: Report, name: str, got: np.ndarray, want: np.ndarray, tol: float = TOL) -> None:
    err = float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64))))
    ok = bool(np.all(np.isfinite(got))) and err <= tol
    report.check(name, ok, f"max |diff| {err:.2e} (tolerance {tol:.0e})")


def cmd_kernels(args: argparse.Namespace) -> int:
    import tempfile

    from edge_gru.backends import create_backend

    ref = load_reference(args.reference)
    report = Report()
    compile_s = 0.0
    tmp = tempfile.mkdtemp(prefix="arm-check-")
    for case in meta(ref)["cases"]:
        name, x = case["name"], ref[f"{case['name']}.x"]
        weights = _weights(ref, name)
        keras_y, x86_y = ref[f"{name}.keras_y"], ref[f"{name}.numpy_y"]
        n = x.shape[0]
        print(f"{name} ({weights.network.input_features} inputs, {weights.network.describe()})", flush=True)
        y_np = _numpy_sequence(weights, x)
        _close(report, f"numpy reference, {n} streams vs Keras", y_np, keras_y)
        _close(report, f"numpy reference, {n} streams vs x86-64 numpy", y_np, x86_y)
        t0 = time.perf_counter()
        backend = create_backend("numba", _bundle(weights, f"{tmp}/{name}"))
        few = min(3, n)
        y_few = _numba_batch_sequence(backend, x, few)  # the first call compiles (or loads) the kernels
        compile_s += time.perf_counter() - t0
        kind = getattr(backend, "kernel_kind", "jit")
        _close(report, f"numba ({kind}) batched step, {few} streams vs Keras", y_few, keras_y[:few])
        y_batch = _numba_batch_sequence(backend, x, n)
        _close(report, f"numba ({kind}) batched step, {n} streams vs Keras", y_batch, keras_y)
        _close(report, f"numba ({kind}) batched step, {n} streams vs x86-64 numpy", y_batch, x86_y)
        y_single = _numba_single_sequence(backend, x, few)
        _close(report, f"numba ({kind}) single-stream step vs Keras", y_single, keras_y[:few])
        y_win = backend.run_windows(np.ascontiguousarray(x))
        _close(report, f"numba ({kind}) windows, {n} windows vs Keras last step", y_win, keras_y[:, -1])
    print(f"(numba import and first calls, compile or cache load included: {compile_s:.1f} s)")
    return report.finish("kernel parity")


# --- forecasts of the default bundle ------------------------------------------------------


def pool_forecasts(model: Any, ids: list[str], values: np.ndarray, ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Feed (T, S) readings step by step through a fresh pool: forecasts (T, S) and statuses (T, S)."""
    pool = model.pool(max_streams=len(ids) + 8)
    t_steps = values.shape[0]
    out = np.full(values.shape, np.nan)
    status = np.zeros(values.shape, np.uint8)
    for k in range(t_steps):
        res = pool.update_detailed(ids, values[k], ts[k], now=float(np.nanmax(ts[k])))
        out[k] = res.forecasts
        status[k] = res.status
    return out, status


def stream_scale(values: np.ndarray) -> np.ndarray:
    """A stream's scale for tolerances: its readings' standard deviation (1 for a constant stream)."""
    scale = np.nanstd(values, axis=0)
    return np.where(scale > 0, scale, 1.0)


def compare_forecasts(
    report: Report, name: str, got: np.ndarray, want: np.ndarray, scale: np.ndarray, tol: float = TOL
) -> None:
    same_nan = np.array_equal(np.isnan(got), np.isnan(want))
    both = ~np.isnan(got) & ~np.isnan(want)
    rel = np.abs(got - want) / scale[None, :]
    err = float(np.max(rel[both])) if both.any() else 0.0
    n = int(both.sum())
    ok = same_nan and n > 0 and err <= tol
    detail = f"{n} forecasts, max |diff|/scale {err:.2e} (tolerance {tol:.0e})"
    if not same_nan:
        detail += f"; forecast present/absent differs at {int((np.isnan(got) != np.isnan(want)).sum())} readings"
    report.check(name, ok, detail)


def cmd_forecasts(args: argparse.Namespace) -> int:
    import edge_gru

    ref = load_reference(args.reference)
    info = meta(ref)
    report = Report()
    model = edge_gru.load(args.bundle, backend=args.backend)
    key = f"forecast.{args.backend}"
    if info.get("bundle_id") != model.id:
        report.check(
            "reference matches bundle",
            False,
            f"reference was made for bundle {info.get('bundle_id')!r}, the bundle is {model.id!r}",
        )
        return report.finish(f"forecasts ({args.backend})")
    if key not in ref:
        report.check(f"x86-64 forecasts for {args.backend}", False, f"{args.reference} has no {key!r}")
        return report.finish(f"forecasts ({args.backend})")
    ids = [str(s) for s in ref["readings.ids"]]
    values, ts = ref["readings.values"], ref["readings.ts"]
    t0 = time.perf_counter()
    got, status = pool_forecasts(model, ids, values, ts)
    took = time.perf_counter() - t0
    report.check(
        "statuses equal x86-64",
        bool(np.array_equal(status, ref[f"status.{args.backend}"])),
        f"{status.size} readings, {int((status == 0).sum())} forecasts",
    )
    compare_forecasts(report, f"{args.backend} forecasts vs x86-64 {args.backend}", got, ref[key], stream_scale(values))
    if args.backend in ("numba", "tflite") and "forecast.numpy" in ref:
        name = f"{args.backend} forecasts vs x86-64 numpy reference"
        compare_forecasts(report, name, got, ref["forecast.numpy"], stream_scale(values))
    print(f"({values.size} readings through the pool in {took:.2f} s)")
    return report.finish(f"forecasts ({args.backend}, bundle {model.id})")


# --- timing --------------------------------------------------------------------------------


def best_seconds_per_call(call: Any, budget_s: float) -> float:
    """Fastest chunk's seconds per call, within about ``budget_s``: the minimum resists a busy machine."""
    call()
    k = 1
    while True:  # grow the chunk to ~budget/10 seconds
        t0 = time.perf_counter()
        for _ in range(k):
            call()
        dt = time.perf_counter() - t0
        if dt >= budget_s / 10 or k >= 1 << 20:
            break
        k *= 2
    best = dt / k
    deadline = time.perf_counter() + budget_s
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        for _ in range(k):
            call()
        best = min(best, (time.perf_counter() - t0) / k)
    return best


def cmd_timing(args: argparse.Namespace) -> int:
    """Time per step for one stream and per stream-step in a batch (information only)."""
    import edge_gru

    model = edge_gru.load(args.bundle, backend=args.backend)
    u, i = model.manifest.state_size, model.manifest.input_features
    rng = np.random.default_rng(0)
    result: dict[str, Any] = {"backend": args.backend, "machine": platform.machine(), "units": u}
    backend = model.backend
    for streams in (1, args.batch):
        h = np.zeros((streams, u), np.float32)
        rows = np.arange(streams, dtype=np.int64)
        x = rng.standard_normal((streams, i)).astype(np.float32)
        per_call = best_seconds_per_call(lambda x=x, h=h, rows=rows: backend.step(x, h, rows), args.seconds)
        result[f"us_per_stream_step_S{streams}"] = round(1e6 * per_call / streams, 3)
    if hasattr(backend, "single_stream"):
        kernel, packed, state, reset_after = backend.single_stream()
        x1 = np.ascontiguousarray(rng.standard_normal(i).astype(np.float32))
        per_call = best_seconds_per_call(lambda: kernel(packed, x1, state, reset_after), args.seconds)
        result["us_per_step_single_stream_kernel"] = round(1e6 * per_call, 3)
        result["kernels"] = getattr(backend, "kernel_kind", "jit")
    print(json.dumps(result))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result))
    return 0


def cmd_environment(args: argparse.Namespace) -> int:
    import importlib.util

    report = Report()
    print(f"  python {platform.python_version()} on {platform.machine()} ({platform.platform()})")
    report.check("machine", platform.machine() == args.expect_machine, f"{platform.machine()}")
    for forbidden in ("tensorflow", "keras"):
        report.check(f"no {forbidden}", importlib.util.find_spec(forbidden) is None, "not installed on the device")
    import edge_gru

    for mod in ("numba", "paho.mqtt", "ai_edge_litert"):
        found = importlib.util.find_spec(mod) is not None
        report.check(f"{mod} installed", found, "device extra" if found else "missing from the device extra")
    mods = set(sys.modules)
    report.check("import edge_gru is light", "numba" not in mods and "tensorflow" not in mods, edge_gru.__version__)
    return report.finish("device environment")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    k = sub.add_parser("kernels")
    k.add_argument("--reference", required=True)
    f = sub.add_parser("forecasts")
    f.add_argument("--reference", required=True)
    f.add_argument("--bundle", required=True)
    f.add_argument("--backend", required=True)
    t = sub.add_parser("timing")
    t.add_argument("--bundle", required=True)
    t.add_argument("--backend", default="numba")
    t.add_argument("--seconds", type=float, default=2.0, help="time budget per measurement")
    t.add_argument("--batch", type=int, default=256)
    t.add_argument("--json-out", default="")
    e = sub.add_parser("environment")
    e.add_argument("--expect-machine", default=os.uname().machine)
    args = ap.parse_args()
    commands = {"kernels": cmd_kernels, "forecasts": cmd_forecasts, "timing": cmd_timing}
    commands["environment"] = cmd_environment
    return int(commands[args.cmd](args))


if __name__ == "__main__":
    sys.exit(main())
