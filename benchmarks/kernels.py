"""GRU step kernels at U = 50, I = 1: numba (JIT and ahead-of-time), the numpy reference, Keras.

Prints, in one run, ns per single-stream step (Python call included) and stream-steps per
second for S = 1, 64, 1024 streams per call. ``--tiles`` compares tile sizes of the
batched numba kernel. Not a test: speed belongs here, correctness in tests/.

    .venv/bin/python benchmarks/kernels.py [--units 50] [--no-keras] [--tiles 32,64,128,256] [--clock cpu|wall]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge_gru import aot, reference
from edge_gru.bench import timing
from edge_gru.kernel_layout import STATE_PER_UNIT, TILE, tile_scratch_size
from edge_gru.layers import DenseLayer, GRULayer, Network, NetworkWeights

SIZES = (1, 64, 1024)


def weights(units: int, features: int, seed: int = 0) -> NetworkWeights:
    """A random GRU(units) + Dense(1): the single-layer kernels' network."""
    rng = np.random.default_rng(seed)
    g = 3 * units
    network = Network(features, (GRULayer(units), DenseLayer(1)))
    gru = {
        "kernel": rng.normal(0, 0.5, (features, g)).astype(np.float32),
        "recurrent_kernel": rng.normal(0, 0.5 / np.sqrt(units), (units, g)).astype(np.float32),
        "bias": rng.normal(0, 0.1, (2, g)).astype(np.float32),
    }
    dense = {"kernel": rng.normal(0, 0.3, (units, 1)).astype(np.float32), "bias": np.zeros(1, np.float32)}
    return NetworkWeights(network, (gru, dense))


def numba_rows(name: str, k: object, w: NetworkWeights, tile: int) -> dict[str, object]:
    p, u, i = w.packed(), w.network.state_size, w.network.input_features
    state = np.zeros(STATE_PER_UNIT * u, np.float32)
    x1 = np.ones(i, np.float32)
    row: dict[str, object] = {"name": name, "single_ns": timing.best_ns(partial(k.gru_step, p, x1, state, True))}  # type: ignore[attr-defined]
    scratch = np.zeros(tile_scratch_size(u, i, tile), np.float32)
    for s in SIZES:
        x = np.ones((s, i), np.float32)
        h = np.zeros((s, u), np.float32)
        rows = np.arange(s, dtype=np.int64)
        y = np.zeros(s, np.float32)
        fn = partial(k.gru_step_batch, p, x, h, rows, scratch, y, True)  # type: ignore[attr-defined]
        row[f"S={s}"] = s / timing.best_ns(fn, repeats=15) * 1e9
    return row


def numpy_row(w: NetworkWeights) -> dict[str, object]:
    i, u = w.network.input_features, w.network.state_size
    x1, h1 = np.ones((1, i), np.float32), np.zeros((1, u), np.float32)
    row: dict[str, object] = {
        "name": "numpy reference",
        "single_ns": timing.best_ns(partial(reference.gru_step, w, x1, h1)),
    }
    for s in SIZES:
        x, h = np.ones((s, i), np.float32), np.zeros((s, u), np.float32)
        row[f"S={s}"] = s / timing.best_ns(partial(reference.gru_step, w, x, h), repeats=15) * 1e9
    return row


def keras_row(w: NetworkWeights) -> dict[str, object]:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    from edge_gru.train.networks import stateful_model_of

    def timed(batch: int) -> float:
        m = stateful_model_of(w, batch=batch, steps=1)
        x = np.ones((batch, 1, w.network.input_features), np.float32)
        return timing.best_ns(partial(m, x, training=False), burst_s=0.02, repeats=5)

    row: dict[str, object] = {"name": f"keras {keras.__version__} (eager call)", "single_ns": timed(1)}
    for s in SIZES:
        row[f"S={s}"] = s / timed(s) * 1e9
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--units", type=int, default=50)
    parser.add_argument("--features", type=int, default=1)
    parser.add_argument("--no-keras", action="store_true")
    parser.add_argument("--tiles", default="", help="comma-separated tile sizes to compare (numba only)")
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    timing.set_clock(args.clock)
    w = weights(args.units, args.features)
    from edge_gru import kernels

    rows = []
    tiles = [int(t) for t in args.tiles.split(",") if t] or [TILE]
    for tile in tiles:
        rows.append(numba_rows(f"numba JIT (tile {tile})", kernels, w, tile))
    compiled = aot.load_kernels()
    if compiled is not None:
        for tile in tiles:
            rows.append(numba_rows(f"numba {compiled.kind} (tile {tile})", compiled, w, tile))
    rows.append(numpy_row(w))
    if not args.no_keras:
        try:
            rows.append(keras_row(w))
        except ImportError as exc:
            rows.append({"name": f"keras: not installed ({exc})"})
    machine = timing.machine_info()
    if args.json:
        print(json.dumps({"units": args.units, "features": args.features, "machine": machine, "rows": rows}, indent=2))
        return
    print(f"GRU({args.units}), {args.features} input(s); clock: {args.clock}; best of several bursts")
    print(f"{'kernel':<34} {'ns/step':>9} " + " ".join(f"{'S=' + str(s) + ' M/s':>12}" for s in SIZES))
    for row in rows:
        if "single_ns" not in row:
            print(row["name"])
            continue
        cells = " ".join(f"{float(row[f'S={s}']) / 1e6:>12.2f}" for s in SIZES)  # type: ignore[arg-type]
        print(f"{row['name']:<34} {float(row['single_ns']):>9,.0f} {cells}")  # type: ignore[arg-type]
    print(
        f"machine: {machine['cpu']}, {machine['cores_usable']} cores, load "
        f"{', '.join(f'{x:.1f}' for x in machine['load_average'] or [])}; python {machine['python']}, "
        f"numpy {machine['versions']['numpy']}, numba {machine['versions']['numba']}"
    )


if __name__ == "__main__":
    main()
