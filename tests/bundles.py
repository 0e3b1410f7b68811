"""Random bundles built without Keras, for tests of the runtime alone."""

from __future__ import annotations

from pathlib import Path

from edge_gru import layers
from edge_gru.bundle import Bundle, Manifest, Normalization, write_bundle
from edge_gru.layers import DenseLayer, GRULayer, Network, NetworkWeights


def random_weights(units: int, features: int, *, reset_after: bool = True, seed: int = 0) -> NetworkWeights:
    """One GRU + Dense(1) (the format-1 network) with random weights."""
    return layers.random_weights(Network(features, (GRULayer(units, reset_after), DenseLayer(1))), seed=seed)


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
) -> Bundle:
    """A bundle of random weights: one GRU(units) + Dense(1), or any ``network``."""
    net = network or Network(features, (GRULayer(units, reset_after), DenseLayer(1)))
    features = net.input_features
    feature_names = tuple(f"f{i}" for i in range(features)) if features > 1 else ("value",)
    manifest = Manifest(
        network=net,
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
    return write_bundle(out, manifest, layers.random_weights(net, seed=seed))
