"""The ``tflite`` and ``tflite-int8`` backends: the bundle's single-step TFLite models.

The interpreter comes from ``ai_edge_litert`` (LiteRT, numpy 2 wheels for x86-64 and
aarch64), else ``tflite_runtime`` (last release needs numpy < 2), else ``tensorflow.lite``
— the first one installed, so a device needs neither TensorFlow nor a compiler.

The state row (the GRU layers' states side by side, ``state_size`` floats) stays outside
the interpreter, in the pool's ``h`` array like every other backend, so checkpoints, gap
resets and the API tests are the same for all, whatever the layer list. Tensors are found
by name in the ``serving_default`` signature (``x_t``, ``h_prev`` -> ``y`` (horizon wide),
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
    """One interpreter sized for ``size`` rows, checked by one step from a zero state.

    A damaged flatbuffer can load and fail only when its tensors are allocated or invoked
    (a wrong tensor index, a bad shape): every such failure is a :class:`BundleError`
    naming the file, raised when the interpreter is built, never a bare ``RuntimeError``
    in the middle of serving.
    """

    def __init__(
        self, cls: type, content: bytes, size: int, tensors: dict[str, _Tensor], shapes: dict[str, int], where: str
    ) -> None:
        self.size = size
        self.tensors = tensors
        self.where = where
        self.x: np.ndarray = np.zeros((size, shapes[INPUT_X]), dtype=tensors[INPUT_X].dtype)
        self.h: np.ndarray = np.zeros((size, shapes[INPUT_H]), dtype=tensors[INPUT_H].dtype)
        try:
            self.interpreter = it = cls(model_content=content, num_threads=1)
            it.resize_tensor_input(tensors[INPUT_X].index, [size, shapes[INPUT_X]], strict=False)
            it.resize_tensor_input(tensors[INPUT_H].index, [size, shapes[INPUT_H]], strict=False)
            it.allocate_tensors()
        except (RuntimeError, ValueError) as exc:
            raise BundleError(f"{where}: the TFLite runtime cannot prepare this model ({exc})") from exc
        y, h = self.run(np.zeros((size, shapes[INPUT_X]), np.float32), np.zeros((size, shapes[INPUT_H]), np.float32))
        widths = {OUTPUT_Y: y.shape, OUTPUT_H: h.shape}
        want = {OUTPUT_Y: (size, shapes[OUTPUT_Y]), OUTPUT_H: (size, shapes[INPUT_H])}
        for name, shape in widths.items():
            if shape != want[name]:
                raise BundleError(
                    f"{where}: output {name!r} came out {list(shape)} for {size} rows, expected {list(want[name])}"
                )
        if not (np.all(np.isfinite(y)) and np.all(np.isfinite(h))):
            raise BundleError(f"{where}: the model computes NaN or inf from a zero state")

    def run(self, x: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = x.shape[0]
        t = self.tensors
        self.x[:n] = t[INPUT_X].encode(x)
        self.h[:n] = t[INPUT_H].encode(h)
        it = self.interpreter
        try:
            it.set_tensor(t[INPUT_X].index, self.x)
            it.set_tensor(t[INPUT_H].index, self.h)
            it.invoke()
            y = t[OUTPUT_Y].decode(it.get_tensor(t[OUTPUT_Y].index)[:n])
            h_new = t[OUTPUT_H].decode(it.get_tensor(t[OUTPUT_H].index)[:n])
        except (RuntimeError, ValueError) as exc:
            raise BundleError(f"{self.where}: the TFLite runtime failed running this model ({exc})") from exc
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
        self._where = str(path)
        self._tensors, self._shapes = self._map_tensors(self._where)
        self._batch(1)  # build and check one interpreter now: a damaged model is refused at load

    def _map_tensors(self, where: str) -> tuple[dict[str, _Tensor], dict[str, int]]:
        try:
            it = self._cls(model_content=self._content, num_threads=1)
        except Exception as exc:
            raise BundleError(f"{where}: the TFLite runtime cannot load this model ({exc})") from exc
        try:
            found = self._find_tensors(it)
        except Exception as exc:  # a damaged flatbuffer fails here in many ways (bad names, bad indices)
            raise BundleError(f"{where}: the TFLite runtime cannot read this model's tensors ({exc})") from exc
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
        shapes = {INPUT_X: self.features, INPUT_H: self.state_size, OUTPUT_Y: self.horizon}
        widths = {**shapes, OUTPUT_H: self.state_size}
        for name, width in widths.items():
            sig = found[name].get("shape_signature", found[name]["shape"])
            if len(sig) != 2 or int(sig[-1]) != width:
                kind = "input" if name in (INPUT_X, INPUT_H) else "output"
                raise BundleError(
                    f"{where}: {kind} {name!r} has shape {[int(v) for v in sig]}, the manifest says (batch, {width})"
                )
        return tensors, shapes

    def _find_tensors(self, it: Any) -> dict[str, dict[str, Any]]:
        """The four tensors' details: by signature name, else by tensor name, else outputs by width."""
        found: dict[str, dict[str, Any]] = {}
        try:
            runner = it.get_signature_runner()
        except (ValueError, AttributeError):
            runner = None
        if runner is not None:
            found.update(runner.get_input_details())
            found.update(runner.get_output_details())
            return found
        # No signature (an older converter): match input tensor names, outputs by name,
        # else by width when that tells them apart (y is horizon wide, h_t state_size).
        for d in it.get_input_details():
            for name in (INPUT_X, INPUT_H):
                if name in d["name"]:
                    found[name] = d
        outputs = it.get_output_details()
        for d in outputs:
            for name in (OUTPUT_H, OUTPUT_Y):
                if d["name"].split(":")[0].rsplit("/", 1)[-1] == name:
                    found.setdefault(name, d)
        if self.horizon != self.state_size and len(outputs) == 2:
            for d in outputs:
                width = int(d.get("shape_signature", d["shape"])[-1])
                if width in (self.horizon, self.state_size):
                    found.setdefault(OUTPUT_Y if width == self.horizon else OUTPUT_H, d)
        return found

    @property
    def int8_io(self) -> bool:
        """Whether the model's inputs and outputs are int8 (else float32 with int8 inside)."""
        return self._tensors[INPUT_H].quantized

    def _batch(self, n: int) -> _Batch:
        size = 1 << max(n - 1, 0).bit_length()
        batch = self._batches.get(size)
        if batch is None:
            batch = self._batches[size] = _Batch(
                self._cls, self._content, size, self._tensors, self._shapes, self._where
            )
        return batch

    def step(self, x: np.ndarray, h: np.ndarray, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        x = np.asarray(x, dtype=np.float32).reshape(rows.shape[0], self.features)
        if np.unique(rows).size != rows.size:
            # A stream listed twice advances twice, in order: one occurrence per round.
            y = np.empty((rows.shape[0], self.horizon), dtype=np.float32)
            for idx in _rounds(rows):
                y[idx] = self.step(x[idx], h, rows[idx])
            return y
        y = np.empty((rows.shape[0], self.horizon), dtype=np.float32)
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
