"""Random bundles built without Keras, for tests of the runtime alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_gru import layers
from edge_gru.bundle import Bundle, Manifest, Normalization, write_bundle
from edge_gru.layers import DenseLayer, GRULayer, Network, NetworkWeights


def classic_network(units: int, features: int, *, reset_after: bool = True) -> Network:
    """One GRU and a linear Dense(1): the format-1 network."""
    return Network(features, (GRULayer(units, reset_after), DenseLayer(1)))


def random_weights(units: int, features: int, *, reset_after: bool = True, seed: int = 0) -> NetworkWeights:
    """GRU(units) > Dense(1), Keras-like scales (the same draws as before the layer list)."""
    rng = np.random.default_rng(seed)
    g = 3 * units
    gru = {
        "kernel": rng.normal(0, 0.5, (features, g)).astype(np.float32),
        "recurrent_kernel": rng.normal(0, 0.5 / np.sqrt(units), (units, g)).astype(np.float32),
        "bias": rng.normal(0, 0.2, (2, g) if reset_after else (g,)).astype(np.float32),
    }
    dense = {
        "kernel": rng.normal(0, 0.5, (units, 1)).astype(np.float32),
        "bias": rng.normal(0, 0.1, (1,)).astype(np.float32),
    }
    return NetworkWeights(classic_network(units, features, reset_after=reset_after), (gru, dense))


def random_network_weights(network: Network, *, seed: int = 0, scale: float = 0.3) -> NetworkWeights:
    """Normal(0, scale) weights for any layer list."""
    rng = np.random.default_rng(seed)
    return NetworkWeights(
        network,
        tuple({k: rng.normal(0, scale, shape).astype(np.float32) for k, shape in s.items()} for s in network.shapes()),
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
    network: Network | None = None,
    weights: NetworkWeights | None = None,
    extra_files: dict[str, bytes] | None = None,
) -> Bundle:
    """A bundle of ``weights``; default random ones of ``network`` (:func:`edge_gru.layers.random_weights`),
    else of GRU(units) > Dense(1) (:func:`random_weights`)."""
    if weights is None and network is not None:
        weights = layers.random_weights(network, seed=seed)
    if weights is None:
        weights = random_weights(units, features, reset_after=reset_after, seed=seed)
    features = weights.network.input_features
    feature_names = tuple(f"f{i}" for i in range(features)) if features > 1 else ("value",)
    manifest = Manifest(
        network=weights.network,
        window=window,
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
    return write_bundle(out, manifest, weights, extra_files=extra_files)
