"""The network as data: an ordered list of layers and their float32 weights.

Every backend, exporter and the trainer read this list, so any depth works and no file
hard-codes a shape. A network is one or more GRU layers (each but the last returning
sequences, implicitly) followed by one or more dense layers; the last dense layer's width
is the forecast horizon (Dense(k): the next k samples). Dropout is an inference no-op and
is dropped at import.

>>> net = Network(2, (GRULayer(8), GRULayer(4, reset_after=False), DenseLayer(3, "relu"), DenseLayer(2)))
>>> net.state_size, net.horizon, net.is_classic
(12, 2, False)
>>> [layer.to_json()["type"] for layer in net.layers]
['gru', 'gru', 'dense', 'dense']
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_gru.errors import BundleError

ACTIVATIONS = ("linear", "relu", "tanh", "sigmoid")  # index = the kernels' activation code
GRU = "gru"
DENSE = "dense"
KIND_GRU = 0  # layer kinds in the kernels' meta table
KIND_DENSE = 1
META_COLUMNS = 4  # meta row: kind | units | flag (reset_after, or activation code) | offset in the packed block


@dataclass(frozen=True)
class GRULayer:
    """A Keras 3 GRU (tanh, exact logistic sigmoid, gate columns z | r | h)."""

    units: int
    reset_after: bool = True

    def to_json(self) -> dict[str, Any]:
        return {"type": GRU, "units": self.units, "reset_after": self.reset_after}


@dataclass(frozen=True)
class DenseLayer:
    """A Keras Dense layer with one of :data:`ACTIVATIONS`."""

    units: int
    activation: str = "linear"

    def to_json(self) -> dict[str, Any]:
        return {"type": DENSE, "units": self.units, "activation": self.activation}


Layer = GRULayer | DenseLayer


@dataclass(frozen=True)
class Network:
    """The architecture: input width and the ordered layers."""

    input_features: int
    layers: tuple[Layer, ...]

    def __post_init__(self) -> None:
        self.check()

    def check(self, where: str = "architecture.layers") -> None:
        """Refuse a list the kernels cannot run, naming the layer."""
        if self.input_features < 1:
            raise BundleError(f"{where}: input_features must be >= 1")
        if not self.layers or not isinstance(self.layers[0], GRULayer):
            raise BundleError(f"{where}: the first layer must be a gru layer")
        if not isinstance(self.layers[-1], DenseLayer):
            raise BundleError(f"{where}: the last layer must be a dense layer (its units are the horizon)")
        seen_dense = False
        for n, layer in enumerate(self.layers):
            if layer.units < 1:
                raise BundleError(f"{where}[{n}]: units must be >= 1")
            if isinstance(layer, DenseLayer):
                seen_dense = True
                if layer.activation not in ACTIVATIONS:
                    raise BundleError(
                        f"{where}[{n}]: activation {layer.activation!r} is not one of {', '.join(ACTIVATIONS)}"
                    )
            elif seen_dense:
                raise BundleError(f"{where}[{n}]: a gru layer after a dense layer is not supported")

    @property
    def gru_layers(self) -> tuple[GRULayer, ...]:
        return tuple(layer for layer in self.layers if isinstance(layer, GRULayer))

    @property
    def dense_layers(self) -> tuple[DenseLayer, ...]:
        return tuple(layer for layer in self.layers if isinstance(layer, DenseLayer))

    @property
    def state_size(self) -> int:
        """Floats of recurrent state per stream: the GRU layers' units, concatenated."""
        return sum(layer.units for layer in self.gru_layers)

    @property
    def horizon(self) -> int:
        return self.layers[-1].units

    @property
    def is_classic(self) -> bool:
        """One GRU and a linear Dense(1): the format-1 network, served by the single-layer kernels."""
        return (
            len(self.layers) == 2
            and isinstance(self.layers[1], DenseLayer)
            and self.layers[1].units == 1
            and self.layers[1].activation == "linear"
        )

    def inputs_of(self, index: int) -> int:
        """Width of layer ``index``'s input."""
        return self.input_features if index == 0 else self.layers[index - 1].units

    def shapes(self) -> list[dict[str, tuple[int, ...]]]:
        """The Keras array shapes of each layer (what ``weights.npz`` holds)."""
        out: list[dict[str, tuple[int, ...]]] = []
        for n, layer in enumerate(self.layers):
            i, u = self.inputs_of(n), layer.units
            if isinstance(layer, GRULayer):
                bias = (2, 3 * u) if layer.reset_after else (3 * u,)
                out.append({"kernel": (i, 3 * u), "recurrent_kernel": (u, 3 * u), "bias": bias})
            else:
                out.append({"kernel": (i, u), "bias": (u,)})
        return out

    def describe(self) -> str:
        """``GRU(64) > GRU(32) > Dense(16, relu) > Dense(1)``: for ``info`` and reprs."""
        parts = []
        for layer in self.layers:
            if isinstance(layer, GRULayer):
                parts.append(f"GRU({layer.units}{'' if layer.reset_after else ', reset_after=False'})")
            else:
                parts.append(f"Dense({layer.units}{'' if layer.activation == 'linear' else ', ' + layer.activation})")
        return " > ".join(parts)

    def to_json(self) -> list[dict[str, Any]]:
        return [layer.to_json() for layer in self.layers]

    @classmethod
    def from_json(cls, data: Any, input_features: int, where: str = "architecture.layers") -> Network:
        if not isinstance(data, list) or not data:
            raise BundleError(f"{where} must be a non-empty list of layers")
        layers: list[Layer] = []
        for n, item in enumerate(data):
            here = f"{where}[{n}]"
            if not isinstance(item, dict):
                raise BundleError(f"{here} must be an object")
            units = item.get("units")
            if isinstance(units, bool) or not isinstance(units, int) or units < 1:
                raise BundleError(f"{here}.units is {units!r}, expected an integer >= 1")
            kind = item.get("type")
            if kind == GRU:
                reset_after = item.get("reset_after", True)
                if not isinstance(reset_after, bool):
                    raise BundleError(f"{here}.reset_after must be true or false")
                layers.append(GRULayer(units, reset_after))
            elif kind == DENSE:
                activation = item.get("activation", "linear")
                if activation not in ACTIVATIONS:
                    raise BundleError(f"{here}.activation is {activation!r}, expected one of {', '.join(ACTIVATIONS)}")
                layers.append(DenseLayer(units, str(activation)))
            else:
                raise BundleError(f"{here}.type is {kind!r}, expected 'gru' or 'dense'")
        return cls(input_features, tuple(layers))


@dataclass(frozen=True)
class NetworkWeights:
    """The float32 arrays of every layer, Keras layouts, in the order of ``network.layers``."""

    network: Network
    arrays: tuple[Mapping[str, np.ndarray], ...]

    def validate(self, *, where: str = "weights.npz") -> None:
        """Check every array's dtype, shape and finiteness; raise BundleError naming it."""
        if len(self.arrays) != len(self.network.layers):
            raise BundleError(
                f"{where}: holds {len(self.arrays)} layers, the architecture has {len(self.network.layers)}"
            )
        for n, (arrays, shapes) in enumerate(zip(self.arrays, self.network.shapes(), strict=True)):
            for key, shape in shapes.items():
                name = f"layers.{n}.{key}"
                arr = arrays.get(key)
                if arr is None:
                    raise BundleError(f"{where}: missing array {name!r}")
                if arr.dtype != np.float32:
                    raise BundleError(f"{where}: array {name!r} has dtype {arr.dtype}, expected float32")
                if arr.shape != shape:
                    raise BundleError(f"{where}: array {name!r} has shape {arr.shape}, expected {shape}")
                if not np.all(np.isfinite(arr)):
                    raise BundleError(f"{where}: array {name!r} contains NaN or inf")

    # -- per-layer views ----------------------------------------------------------------------

    def layer(self, index: int) -> Mapping[str, np.ndarray]:
        return self.arrays[index]

    def input_bias(self, index: int) -> np.ndarray:
        bias = self.arrays[index]["bias"]
        return np.asarray(bias[0] if bias.ndim == 2 else bias, dtype=np.float32)

    def recurrent_bias(self, index: int) -> np.ndarray:
        bias = self.arrays[index]["bias"]
        if bias.ndim == 2:
            return np.asarray(bias[1], dtype=np.float32)
        return np.zeros(bias.shape[0], dtype=np.float32)

    # -- storage ------------------------------------------------------------------------------

    def as_dict(self) -> dict[str, np.ndarray]:
        """``weights.npz`` keys of format 2: ``layers.<n>.<array>``."""
        return {f"layers.{n}.{k}": v for n, arrays in enumerate(self.arrays) for k, v in arrays.items()}

    @classmethod
    def from_mapping(
        cls, network: Network, arrays: Mapping[str, np.ndarray], *, where: str = "weights.npz"
    ) -> NetworkWeights:
        layers: list[dict[str, np.ndarray]] = []
        for n, shapes in enumerate(network.shapes()):
            layer = {}
            for key in shapes:
                name = f"layers.{n}.{key}"
                if name not in arrays:
                    raise BundleError(f"{where}: missing array {name!r}")
                layer[key] = np.asarray(arrays[name])
            layers.append(layer)
        extra = sorted(set(arrays) - {f"layers.{n}.{k}" for n, s in enumerate(network.shapes()) for k in s})
        if extra:
            raise BundleError(f"{where}: unexpected array(s) {', '.join(extra)} for this architecture")
        weights = cls(network, tuple(layers))
        weights.validate(where=where)
        return weights

    @classmethod
    def from_keras_arrays(cls, network: Network, per_layer: list[list[np.ndarray]]) -> NetworkWeights:
        """From Keras ``layer.get_weights()`` lists, one per layer of ``network``."""
        names = [list(shapes) for shapes in network.shapes()]
        arrays = tuple(
            {k: np.asarray(v, dtype=np.float32) for k, v in zip(keys, values, strict=True)}
            for keys, values in zip(names, per_layer, strict=True)
        )
        weights = cls(network, arrays)
        weights.validate(where="keras weights")
        return weights

    def keras_arrays(self) -> list[list[np.ndarray]]:
        """Per layer, the arrays in Keras ``set_weights`` order."""
        return [[arrays[k] for k in shapes] for arrays, shapes in zip(self.arrays, self.network.shapes(), strict=True)]

    # -- the kernels' view --------------------------------------------------------------------

    def packed(self) -> np.ndarray:
        """All layers in one contiguous float32 block, each layer's block after the previous one.

        GRU layer: kernel (I*3U) | recurrent_kernel (U*3U) | b_in (3U) | b_rec (3U).
        Dense layer: kernel (I*K) | bias (K). For one GRU and Dense(1) this is the
        single-layer kernels' block exactly.
        """
        parts: list[np.ndarray] = []
        for n, layer in enumerate(self.network.layers):
            arrays = self.arrays[n]
            parts.append(arrays["kernel"].ravel())
            if isinstance(layer, GRULayer):
                parts += [arrays["recurrent_kernel"].ravel(), self.input_bias(n), self.recurrent_bias(n)]
            else:
                parts.append(arrays["bias"].ravel())
        return np.ascontiguousarray(np.concatenate(parts).astype(np.float32))

    def meta(self) -> np.ndarray:
        """The stack kernels' layer table (L, 4) int64: kind | units | flag | offset into :meth:`packed`."""
        rows = []
        offset = 0
        for n, layer in enumerate(self.network.layers):
            i, u = self.network.inputs_of(n), layer.units
            if isinstance(layer, GRULayer):
                rows.append((KIND_GRU, u, int(layer.reset_after), offset))
                offset += i * 3 * u + u * 3 * u + 6 * u
            else:
                rows.append((KIND_DENSE, u, ACTIVATIONS.index(layer.activation), offset))
                offset += i * u + u
        return np.ascontiguousarray(np.array(rows, dtype=np.int64).reshape(-1, META_COLUMNS))


#: Format-1 ``weights.npz`` keys (one GRU and Dense(1)), migrated on read.
V1_KEYS = ("kernel", "recurrent_kernel", "bias", "dense_kernel", "dense_bias")


def from_v1_arrays(arrays: Mapping[str, np.ndarray], *, where: str = "weights.npz") -> NetworkWeights:
    """A format-1 single GRU + Dense(1) as a two-layer list."""
    missing = [k for k in V1_KEYS if k not in arrays]
    if missing:
        raise BundleError(f"{where}: missing array(s) {', '.join(missing)}")
    kernel = np.asarray(arrays["kernel"])
    recurrent = np.asarray(arrays["recurrent_kernel"])
    bias = np.asarray(arrays["bias"])
    if kernel.ndim != 2 or recurrent.ndim != 2 or kernel.shape[0] < 1 or recurrent.shape[0] < 1:
        raise BundleError(f"{where}: array 'kernel' has shape {kernel.shape}, expected (I, 3U)")
    network = Network(int(kernel.shape[0]), (GRULayer(int(recurrent.shape[0]), bias.ndim == 2), DenseLayer(1)))
    weights = NetworkWeights(
        network,
        (
            {"kernel": kernel, "recurrent_kernel": recurrent, "bias": bias},
            {"kernel": np.asarray(arrays["dense_kernel"]), "bias": np.asarray(arrays["dense_bias"])},
        ),
    )
    weights.validate(where=where)
    return weights


def random_weights(network: Network, *, seed: int = 0) -> NetworkWeights:
    """Random but well-scaled weights (recurrent kernels ~1/sqrt(U)): for kernel checks and benchmarks."""
    rng = np.random.default_rng(seed)
    layers = []
    for shapes in network.shapes():
        arrays = {}
        for key, shape in shapes.items():
            scale = 0.5 / np.sqrt(shape[0]) if key == "recurrent_kernel" else (0.2 if key == "bias" else 0.5)
            arrays[key] = rng.normal(0, scale, shape).astype(np.float32)
        layers.append(arrays)
    return NetworkWeights(network, tuple(layers))
