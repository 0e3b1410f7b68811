"""The ``tflite`` and ``tflite-int8`` backends: the bundle's single-step TFLite models.

The interpreter comes from ``ai_edge_litert`` (LiteRT, numpy 2 wheels for x86-64 and
aarch64), else ``tflite_runtime`` (last release needs numpy < 2), else ``tensorflow.lite``
— the first one installed, so a device needs neither TensorFlow nor a compiler.

The hidden state stays outside the interpreter, in the pool's ``h`` array like every
other backend, so checkpoints, gap resets and the API tests are the same for all. Tensors
are found by name in the ``serving_default`` signature (``x_t``, ``h_prev`` -> ``y``,
``h_t``), never by position. A batch of S streams runs as one invoke on an interpreter
whose batch dimension is resized to the next power of two (one cached interpreter per
size, at most :data:`MAX_BATCH` rows per invoke); int8 inputs and outputs, when the
model has them, are quantized and dequantized here with the model's own scales.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_gru.backends.base import Backend
from edge_gru.bundle import STEP_F32, STEP_INT8, Bundle
from edge_gru.errors import BackendUnavailableError, BundleError, MissingExtraError

MAX_BATCH = 1024
INPUT_X, INPUT_H, OUTPUT_Y, OUTPUT_H = "x_t", "h_prev", "y", "h_t"


def interpreter_class() -> tuple[type, str]:
    """The first installed TFLite interpreter: LiteRT, tflite-runtime, then TensorFlow."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, "ai_edge_litert"
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter

        return Interpreter, "tflite_runtime"
    except ImportError:
        pass
    try:
        import tensorflow as tf

        return tf.lite.Interpreter, "tensorflow.lite"
    except ImportError:
        pass
    raise MissingExtraError("the tflite backend", "tflite", module="ai_edge_litert")


@dataclass(frozen=True)
class _Tensor:
    index: int
    dtype: type
    scale: float
    zero_point: int

    @property
    def quantized(self) -> bool:
        return self.dtype in (np.int8, np.uint8)

    def encode(self, values: np.ndarray) -> np.ndarray:
        if not self.quantized:
            return np.ascontiguousarray(values, dtype=np.float32)
        info = np.iinfo(self.dtype)
        q = np.rint(values / self.scale) + self.zero_point
        return np.clip(q, info.min, info.max).astype(self.dtype)

    def decode(self, values: np.ndarray) -> np.ndarray:
        if not self.quantized:
            return np.asarray(values, dtype=np.float32)
        return ((values.astype(np.float32) - self.zero_point) * self.scale).astype(np.float32)


class _Batch:
    """One interpreter sized for ``size`` rows."""

    def __init__(self, cls: type, content: bytes, size: int, tensors: dict[str, _Tensor], shapes: dict[str, int]):
        self.interpreter = cls(model_content=content, num_threads=1)
        self.size = size
        self.tensors = tensors
        it = self.interpreter
        it.resize_tensor_input(tensors[INPUT_X].index, [size, shapes[INPUT_X]], strict=False)
        it.resize_tensor_input(tensors[INPUT_H].index, [size, shapes[INPUT_H]], strict=False)
        it.allocate_tensors()
        self.x: np.ndarray = np.zeros((size, shapes[INPUT_X]), dtype=tensors[INPUT_X].dtype)
        self.h: np.ndarray = np.zeros((size, shapes[INPUT_H]), dtype=tensors[INPUT_H].dtype)

    def run(self, x: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = x.shape[0]
        t = self.tensors
        self.x[:n] = t[INPUT_X].encode(x)
        self.h[:n] = t[INPUT_H].encode(h)
        it = self.interpreter
        it.set_tensor(t[INPUT_X].index, self.x)
        it.set_tensor(t[INPUT_H].index, self.h)
        it.invoke()
        y = t[OUTPUT_Y].decode(it.get_tensor(t[OUTPUT_Y].index)[:n]).reshape(n)
        h_new = t[OUTPUT_H].decode(it.get_tensor(t[OUTPUT_H].index)[:n])
        return y, h_new


class TFLiteBackend(Backend):
    """Runs ``step_f32.tflite`` (``int8=False``) or ``step_int8.tflite`` (``int8=True``)."""

    def __init__(self, bundle: Bundle, int8: bool) -> None:
        super().__init__(bundle)
        self.name = "tflite-int8" if int8 else "tflite"
        filename = STEP_INT8 if int8 else STEP_F32
        path = bundle.file(filename)
        if path is None:
            raise BackendUnavailableError(
                f"{bundle.path}: the bundle has no {filename}; re-export it with 'edge-gru train' "
                "or use backend 'numba' or 'numpy'"
            )
        self._cls, self.runtime = interpreter_class()
        self._content = path.read_bytes()
        self._batches: dict[int, _Batch] = {}
        self._tensors, self._shapes = self._map_tensors(str(path))

    def _map_tensors(self, where: str) -> tuple[dict[str, _Tensor], dict[str, int]]:
        try:
            it = self._cls(model_content=self._content, num_threads=1)
        except Exception as exc:
            raise BundleError(f"{where}: the TFLite runtime cannot load this model ({exc})") from exc
        found: dict[str, dict[str, Any]] = {}
        try:
            runner = it.get_signature_runner()
            found.update(runner.get_input_details())
            found.update(runner.get_output_details())
        except (ValueError, AttributeError):
            # No signature (an older converter): match input tensor names, outputs by shape.
            for d in it.get_input_details():
                for name in (INPUT_X, INPUT_H):
                    if name in d["name"]:
                        found[name] = d
            for d in it.get_output_details():
                found[OUTPUT_Y if int(d["shape_signature"][-1]) == 1 else OUTPUT_H] = d
        missing = [n for n in (INPUT_X, INPUT_H, OUTPUT_Y, OUTPUT_H) if n not in found]
        if missing:
            raise BundleError(
                f"{where}: the model has no tensor(s) named {', '.join(missing)}; expected a single-step model "
                f"with inputs {INPUT_X}, {INPUT_H} and outputs {OUTPUT_Y}, {OUTPUT_H}"
            )
        tensors = {}
        for name, d in found.items():
            scale, zero = d.get("quantization", (0.0, 0))
            tensors[name] = _Tensor(int(d["index"]), d["dtype"], float(scale), int(zero))
        shapes = {INPUT_X: self.features, INPUT_H: self.units}
        for name, width in shapes.items():
            sig = found[name].get("shape_signature", found[name]["shape"])
            if int(sig[-1]) != width:
                raise BundleError(f"{where}: input {name!r} has width {int(sig[-1])}, the manifest says {width}")
        return tensors, shapes

    @property
    def int8_io(self) -> bool:
        """Whether the model's inputs and outputs are int8 (else float32 with int8 inside)."""
        return self._tensors[INPUT_H].quantized

    def _batch(self, n: int) -> _Batch:
        size = 1 << max(n - 1, 0).bit_length()
        batch = self._batches.get(size)
        if batch is None:
            batch = self._batches[size] = _Batch(self._cls, self._content, size, self._tensors, self._shapes)
        return batch

    def step(self, x: np.ndarray, h: np.ndarray, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        x = np.asarray(x, dtype=np.float32).reshape(rows.shape[0], self.features)
        if np.unique(rows).size != rows.size:
            # A stream listed twice advances twice, in order: one occurrence per round.
            y = np.empty(rows.shape[0], dtype=np.float32)
            for idx in _rounds(rows):
                y[idx] = self.step(x[idx], h, rows[idx])
            return y
        y = np.empty(rows.shape[0], dtype=np.float32)
        for start in range(0, rows.shape[0], MAX_BATCH):
            part = slice(start, start + MAX_BATCH)
            r = rows[part]
            y[part], h[r] = self._batch(r.shape[0]).run(x[part], h[r])
        return y


def _rounds(rows: np.ndarray) -> list[np.ndarray]:
    """Indices split so each row appears once per round, occurrences kept in order."""
    seen: dict[int, int] = {}
    rank = np.empty(rows.shape[0], dtype=np.int64)
    for i, r in enumerate(rows.tolist()):
        rank[i] = seen.get(r, 0)
        seen[r] = rank[i] + 1
    return [np.flatnonzero(rank == k) for k in range(int(rank.max()) + 1)]
