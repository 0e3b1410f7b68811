"""The single GRU(50) + Dense(1) kernels of an earlier revision beside this tree's, in one run.

The layer-list change must not slow the default network down: this times the single-step
and the batched (S = 1, 64, 1024) kernels of ``--base`` (a git revision, extracted to a
temporary directory) and of the working tree, alternating subprocesses so both see the same
machine load, best of ``--rounds``. It also times this tree's stack kernel on the same
network, and a GRU(64) > GRU(32) > Dense(1) stack, for scale.

    .venv/bin/python benchmarks/kernels_before_after.py --base 159d9c7
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PROBE = r"""
import json, sys
import numpy as np
from edge_gru import kernels
from edge_gru.bench.timing import best_ns
from edge_gru.kernel_layout import STATE_PER_UNIT, tile_scratch_size
rng = np.random.default_rng(1)
u, i = 50, 1
g = 3 * u
p = (rng.standard_normal(i * g + u * g + 2 * g + u + 1) * 0.1).astype(np.float32)
out = {}
x1 = np.ones(i, np.float32)
state = np.zeros(STATE_PER_UNIT * u, np.float32)
out["single step"] = best_ns(lambda: kernels.gru_step(p, x1, state, True))
scratch = np.zeros(tile_scratch_size(u, i), np.float32)
for s in (1, 64, 1024):
    x = rng.standard_normal((s, i)).astype(np.float32)
    h = np.zeros((s, u), np.float32)
    rows = np.arange(s, dtype=np.int64)
    y = np.zeros(s, np.float32)
    out[f"batch S={s} (ns/stream)"] = best_ns(lambda: kernels.gru_step_batch(p, x, h, rows, scratch, y, True)) / s
if "--stacks" in sys.argv:
    from edge_gru.kernel_layout import stack_scratch_size, stack_state_size
    from edge_gru.layers import DenseLayer, GRULayer, Network, random_weights
    nets = {"stack kernel, GRU(50)>Dense(1)": Network(1, (GRULayer(50), DenseLayer(1))),
            "stack kernel, GRU(64)>GRU(32)>Dense(1)": Network(1, (GRULayer(64), GRULayer(32), DenseLayer(1)))}
    for label, net in nets.items():
        w = random_weights(net)
        sp, meta = w.packed(), w.meta()
        st = np.zeros(stack_state_size(net), np.float32)
        y1 = np.zeros(1, np.float32)
        out[f"{label}: single step"] = best_ns(lambda: kernels.stack_step(sp, meta, x1, st, y1))
        sc = np.zeros(stack_scratch_size(net), np.float32)
        x = rng.standard_normal((1024, 1)).astype(np.float32)
        h = np.zeros((1024, net.state_size), np.float32)
        rows = np.arange(1024, dtype=np.int64)
        y = np.zeros((1024, 1), np.float32)
        ns = best_ns(lambda: kernels.stack_step_batch(sp, meta, x, h, rows, sc, y))
        out[f"{label}: batch S=1024 (ns/stream)"] = ns / 1024
print(json.dumps(out))
"""


def extract(rev: str, into: Path) -> Path:
    """``git archive`` of ``rev``'s edge_gru package into ``into``."""
    data = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "edge_gru"], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(data)) as tar:
        tar.extractall(into, filter="data")
    return into


def probe(path: Path, stacks: bool, cache: Path) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(path), "NUMBA_CACHE_DIR": str(cache), "EDGE_GRU_KERNELS": "jit"}
    args = [sys.executable, "-c", PROBE] + (["--stacks"] if stacks else [])
    result = subprocess.run(args, env=env, capture_output=True, text=True, check=True, cwd=path)
    return json.loads(result.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="git revision to compare with (e.g. the one before a change)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from edge_gru.bench.timing import machine_info

    with tempfile.TemporaryDirectory() as tmp:
        base = extract(args.base, Path(tmp) / "base")
        best: dict[str, dict[str, float]] = {"base": {}, "now": {}}
        for _ in range(args.rounds):
            for name, path in (("base", base), ("now", ROOT)):
                for key, ns in probe(path, name == "now", Path(tmp) / f"cache-{name}").items():
                    best[name][key] = min(best[name].get(key, float("inf")), ns)
    info = machine_info()
    print(f"CPU: {info.get('cpu')}; {info.get('cores')} cores; best of {args.rounds} rounds, CPU time")
    print(f"{'kernel (GRU(50) + Dense(1), I=1)':<52}{args.base:>12}{'this tree':>12}{'ratio':>8}")
    for key, ns in best["now"].items():
        before = best["base"].get(key)
        ratio = f"{ns / before:.3f}" if before else ""
        print(f"{key:<52}{(f'{before:,.1f}' if before else '-'):>12}{ns:>12,.1f}{ratio:>8}")


if __name__ == "__main__":
    main()
