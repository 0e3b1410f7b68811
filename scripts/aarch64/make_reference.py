"""Write the x86-64 reference outputs that the emulated Raspberry Pi checks compare against.

Run on the desktop (x86-64, with the ``train`` extra) through ``scripts/aarch64/make-reference``.
The file holds:

* random GRU + Dense(1) models of both ``reset_after`` kinds (weights, inputs) with the
  outputs of Keras (every step of the sequence from a zero state) and of the numpy
  reference kernel computed here;
* fixed readings for a few streams (with a gap, a NaN, a duplicate and an out-of-order
  timestamp) and the stream-pool forecasts of ``models/default`` for them with every
  backend this machine has (numpy, numba, tflite, tflite-int8), with the bundle id.

``--forecasts-only`` skips Keras and writes only the second part: ``scripts/test-aarch64``
uses it when the stored file was made for an older default bundle.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts" / "aarch64" / "checks"))

from arm_checks import pool_forecasts  # noqa: E402

# (name, input features, units, reset_after)
CASES = [
    ("c0", 1, 8, True),
    ("c1", 1, 8, False),
    ("c2", 3, 16, True),
    ("c3", 2, 50, False),
    ("c4", 1, 50, True),
]
STREAMS, STEPS = 70, 25  # 70: one full tile of 64 streams and a partial one


def keras_cases(out: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    import os

    os.environ.setdefault("KERAS_BACKEND", "tensorflow")

    from edge_gru.layers import from_v1_arrays
    from edge_gru.reference import gru_step
    from edge_gru.train.networks import stateful_model_of

    rng = np.random.default_rng(20261126)
    cases = []
    for name, i, u, reset_after in CASES:
        kernel = (rng.standard_normal((i, 3 * u)) * 0.6).astype(np.float32)
        recurrent = (rng.standard_normal((u, 3 * u)) / np.sqrt(u)).astype(np.float32)
        bias_shape = (2, 3 * u) if reset_after else (3 * u,)
        bias = (rng.standard_normal(bias_shape) * 0.3).astype(np.float32)
        dense_kernel = (rng.standard_normal((u, 1)) / np.sqrt(u)).astype(np.float32)
        dense_bias = (rng.standard_normal(1) * 0.1).astype(np.float32)
        x = (rng.standard_normal((STREAMS, STEPS, i)) * 1.5).astype(np.float32)

        weights = from_v1_arrays(
            {
                "kernel": kernel,
                "recurrent_kernel": recurrent,
                "bias": bias,
                "dense_kernel": dense_kernel,
                "dense_bias": dense_bias,
            }
        )
        # the one Keras builder, fresh (zero state): every step's output of each stream
        model = stateful_model_of(weights, batch=STREAMS, steps=STEPS)
        keras_y = np.asarray(model.predict(x, batch_size=STREAMS, verbose=0))[:, :, 0].astype(np.float32)

        h = np.zeros((STREAMS, u), np.float32)
        numpy_y = np.stack([gru_step(weights, x[:, t, :], h)[:, 0] for t in range(STEPS)], axis=1)
        err = float(np.max(np.abs(numpy_y - keras_y)))
        if err > 1e-5:
            raise SystemExit(f"{name}: the numpy reference differs from Keras by {err:.2e} on x86-64 itself")
        for key, arr in {
            "kernel": kernel,
            "recurrent_kernel": recurrent,
            "bias": bias,
            "dense_kernel": dense_kernel,
            "dense_bias": dense_bias,
            "x": x,
            "keras_y": keras_y,
            "numpy_y": numpy_y,
        }.items():
            out[f"{name}.{key}"] = arr
        cases.append({"name": name, "inputs": i, "units": u, "reset_after": reset_after})
        print(f"{name}: I={i} U={u} reset_after={reset_after}: numpy vs Keras {err:.2e}")
    return cases


def readings() -> tuple[list[str], np.ndarray, np.ndarray]:
    """(T, S) readings and timestamps of five differently scaled sensors, with the faults the pool handles."""
    rng = np.random.default_rng(7)
    t_steps = 160
    k = np.arange(t_steps, dtype=np.float64)
    ids = ["kitchen-temp", "meter-w", "soil-moisture", "co2-ppm", "hr-bpm"]
    values = np.stack(
        [
            21.0 + 2.0 * np.sin(2 * np.pi * k / 48) + 0.1 * rng.standard_normal(t_steps),
            1500.0 + np.cumsum(rng.standard_normal(t_steps) * 40.0),
            0.031 + 0.004 * np.sin(2 * np.pi * k / 30) + 0.0005 * rng.standard_normal(t_steps),
            600.0 + 150.0 * (k % 40 > 20) + 5.0 * rng.standard_normal(t_steps),
            62.0 + 6.0 * np.sin(2 * np.pi * k / 64) + rng.standard_normal(t_steps),
        ],
        axis=1,
    )
    periods = np.array([10.0, 1.0, 60.0, 30.0, 2.0])
    ts = 1_764_000_000.0 + k[:, None] * periods[None, :] + np.arange(5)[None, :] * 0.25
    ts[90:, 1] += 50.0  # meter-w: a gap of 50 periods -> state reset
    values[40, 0] = np.nan  # kitchen-temp: one NaN reading
    ts[70, 3] = ts[69, 3]  # co2-ppm: a duplicate timestamp
    ts[110, 4] = ts[108, 4]  # hr-bpm: older than the last one -> out of order
    return ids, values, ts


def default_forecasts(out: dict[str, np.ndarray], bundle: str) -> dict[str, Any]:
    import edge_gru
    from edge_gru.backends import BACKENDS
    from edge_gru.errors import BackendUnavailableError

    ids, values, ts = readings()
    out["readings.ids"] = np.array(ids)
    out["readings.values"] = values
    out["readings.ts"] = ts
    done = []
    model_id = ""
    for backend in BACKENDS:
        try:
            model = edge_gru.load(bundle, backend=backend)
        except BackendUnavailableError as exc:
            print(f"forecasts: backend {backend} unavailable here ({exc}); not stored")
            continue
        model_id = model.id
        forecasts, status = pool_forecasts(model, ids, values, ts)
        out[f"forecast.{backend}"] = forecasts
        out[f"status.{backend}"] = status
        done.append(backend)
        print(f"forecasts: {backend}: {int((status == 0).sum())} forecasts of {status.size} readings")
    files = json.loads((Path(bundle) / "manifest.json").read_text()).get("files", {})
    # The id follows the weights only; the checksums also tell a re-calibrated int8 model apart.
    return {"bundle_id": model_id, "bundle_files": files, "backends": done}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "tests" / "data" / "arm_reference.npz"))
    ap.add_argument("--bundle", default=str(ROOT / "models" / "default"))
    ap.add_argument("--forecasts-only", action="store_true", help="skip Keras; default-bundle forecasts only")
    args = ap.parse_args()
    out: dict[str, np.ndarray] = {}
    info: dict[str, Any] = {"made_on": "x86_64", "tool": "scripts/aarch64/make-reference"}
    info["cases"] = [] if args.forecasts_only else keras_cases(out)
    info.update(default_forecasts(out, args.bundle))
    out["meta"] = np.array(json.dumps(info))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **out)  # type: ignore[arg-type]
    print(f"wrote {args.out} (bundle {info['bundle_id']}, backends {', '.join(info['backends'])})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
