"""Where each layer's numbers live in the generated C: the layer table the runtime loops over.

The model source holds two ``const`` arrays, like emlearn's list of layers: the weight
matrices (float32, or int8) and the float vectors (biases, then the int8 column scales).
Each row of ``edge_gru_layers`` gives a layer's kind, sizes and offsets into both, so one
runtime serves any depth. :func:`layout` is the one place those offsets are computed; the
model source writes them and :mod:`firmware_export.footprint` counts them.

>>> from edge_gru.layers import DenseLayer, GRULayer, Network
>>> net = Network(1, (GRULayer(4), GRULayer(2, reset_after=False), DenseLayer(3, "relu"), DenseLayer(2)))
>>> plan = layout(net, int8=False)
>>> [(r.kind, r.inputs, r.units, r.flag, r.matrix, r.vector) for r in plan.rows]
[(0, 1, 4, 1, 0, 0), (0, 4, 2, 0, 60, 24), (1, 2, 3, 1, 96, 30), (1, 3, 2, 0, 102, 33)]
>>> plan.matrix_count, plan.vector_count, plan.max_gates, plan.max_dense
(108, 35, 12, 3)
"""

from __future__ import annotations

from dataclasses import dataclass

from edge_gru.layers import ACTIVATIONS, KIND_DENSE, KIND_GRU, GRULayer, Network

TABLE_ROW_BYTES = 6 * 4  # sizeof(edge_gru_layer): six int32_t


@dataclass(frozen=True)
class LayerRow:
    kind: int  # KIND_GRU or KIND_DENSE (edge_gru.layers)
    inputs: int
    units: int
    flag: int  # GRU: reset_after; dense: index in ACTIVATIONS
    matrix: int  # offset in edge_gru_matrices: kernel, then a GRU's recurrent kernel
    vector: int  # offset in edge_gru_vectors: biases (GRU: input, then recurrent if reset_after), then int8 scales
    matrix_size: int
    bias_size: int
    scale_size: int  # int8 column scales (0 for float weights)


@dataclass(frozen=True)
class Layout:
    rows: tuple[LayerRow, ...]

    @property
    def matrix_count(self) -> int:
        return sum(r.matrix_size for r in self.rows)

    @property
    def bias_count(self) -> int:
        return sum(r.bias_size for r in self.rows)

    @property
    def scale_count(self) -> int:
        return sum(r.scale_size for r in self.rows)

    @property
    def vector_count(self) -> int:
        return self.bias_count + self.scale_count

    @property
    def max_gates(self) -> int:
        """Width of the widest GRU's gate columns z | r | h (the runtime's gate scratch)."""
        return max(3 * r.units for r in self.rows if r.kind == KIND_GRU)

    @property
    def max_dense(self) -> int:
        """Width of the widest dense layer (the runtime's two ping-pong buffers)."""
        return max(r.units for r in self.rows if r.kind == KIND_DENSE)


def layout(network: Network, *, int8: bool) -> Layout:
    rows = []
    matrix = vector = 0
    for n, layer in enumerate(network.layers):
        i, u = network.inputs_of(n), layer.units
        if isinstance(layer, GRULayer):
            kind, flag = KIND_GRU, int(layer.reset_after)
            matrix_size = i * 3 * u + u * 3 * u
            bias_size = 6 * u if layer.reset_after else 3 * u
            scale_size = 6 * u if int8 else 0
        else:
            kind, flag = KIND_DENSE, ACTIVATIONS.index(layer.activation)
            matrix_size, bias_size, scale_size = i * u, u, u if int8 else 0
        rows.append(LayerRow(kind, i, u, flag, matrix, vector, matrix_size, bias_size, scale_size))
        matrix += matrix_size
        vector += bias_size + scale_size
    return Layout(tuple(rows))
