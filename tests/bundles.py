"""Random bundles built without Keras, for tests of the runtime alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_gru.bundle import Bundle, GRUWeights, Manifest, Normalization, write_bundle


def random_weights(units: int, features: int, *, reset_after: bool = True, seed: int = 0) -> GRUWeights:
    rng = np.random.default_rng(seed)
    g = 3 * units
    return GRUWeights(
        kernel=rng.normal(0, 0.5, (features, g)).astype(np.float32),
        recurrent_kernel=rng.normal(0, 0.5 / np.sqrt(units), (units, g)).astype(np.float32),
        bias=rng.normal(0, 0.2, (2, g) if reset_after else (g,)).astype(np.float32),
        dense_kernel=rng.normal(0, 0.5, (units, 1)).astype(np.float32),
        dense_bias=rng.normal(0, 0.1, (1,)).astype(np.float32),
    )


def make_bundle(
    out: Path,
    *,
    units: int = 8,
    features: int = 1,
    window: int = 5,
    mode: str = "stateful",
    reset_after: bool = True,
    normalization: Normalization | None = None,
    sample_period_s: float | None = None,
    warmup: int = 3,
    seed: int = 0,
    name: str = "test",
) -> Bundle:
    feature_names = tuple(f"f{i}" for i in range(features)) if features > 1 else ("value",)
    manifest = Manifest(
        units=units,
        input_features=features,
        window=window,
        reset_after=reset_after,
        mode=mode,
        features=feature_names,
        target=feature_names[0],
        normalization=normalization
        or Normalization(
            kind="fixed", input_mean=(10.0,) * features, input_std=(2.0,) * features, target_mean=10.0, target_std=2.0
        ),
        sample_period_s=sample_period_s,
        warmup=warmup,
        name=name,
    )
    return write_bundle(out, manifest, random_weights(units, features, reset_after=reset_after, seed=seed))
