"""The first ``edge-gru simulate`` on a machine: numba compiles its kernels, and the user hears of it.

Run with a fresh ``NUMBA_CACHE_DIR`` and the JIT forced, as on a new install: a progress
line says the kernels are compiling, the throughput excludes the compile (the backend is
warmed up before the clock starts) and the warm-up is reported on its own. The second run
finds the kernels in the cache.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT

pytest.importorskip("numba")


ARGS = ["--streams", "2", "--duration", "1d", "--backend", "numba", "--json"]


def simulate(cache: Path) -> tuple[dict[str, Any], str]:
    res = subprocess.run(
        [sys.executable, "-m", "edge_gru.cli", "simulate", *ARGS],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "NUMBA_CACHE_DIR": str(cache), "EDGE_GRU_KERNELS": "jit"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout), res.stderr


def test_first_run_says_it_compiles_and_keeps_the_compile_out_of_the_throughput(tmp_path: Path) -> None:
    cache = tmp_path / "numba-cache"
    first, stderr = simulate(cache)
    assert "compiling the numba kernels (first run only" in stderr, stderr
    timing = first["timing"]
    warmup = timing["warmup"]
    assert warmup["kernels"] == "jit" and warmup["compiled"] is True
    # Compiling takes seconds; 576 readings through compiled kernels take a fraction of one. Were the
    # compile inside the timed run, wall_s would be the larger.
    assert timing["wall_s"] < warmup["s"], timing
    assert timing["readings_per_s"] == pytest.approx(first["readings"] / timing["wall_s"], rel=0.02)

    second, _ = simulate(cache)
    assert second["timing"]["warmup"]["compiled"] is False
    # The compile changes no result: the same seed gives the same forecasts, cold or warm.
    assert second["total"] == first["total"]
