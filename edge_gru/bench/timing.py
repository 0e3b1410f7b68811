"""Best-of-bursts timing and the machine facts every figure is quoted with."""

from __future__ import annotations

import gc
import os
import platform
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

CLOCKS: dict[str, Callable[[], float]] = {"cpu": time.process_time, "wall": time.perf_counter}
_clock: list[Callable[[], float]] = [time.process_time]


def set_clock(name: str) -> None:
    """``cpu`` (default: this process's CPU time, robust on a busy machine) or ``wall`` (elapsed time)."""
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
