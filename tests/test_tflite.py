"""TFLite export and backends: real LiteRT interpreter, float32 and full-int8 single-step models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import edge_gru
from edge_gru.backends.tflite_backend import INPUT_H, INPUT_X, TFLiteBackend, interpreter_class
from edge_gru.bundle import STEP_F32, STEP_INT8, load_bundle, write_bundle
from edge_gru.errors import BackendUnavailableError, BundleError
from edge_gru.evaluation import evaluate_series
from tests.trained_models import learnable_series, trained


def test_litert_is_preferred() -> None:
    cls, runtime = interpreter_class()
    assert runtime == "ai_edge_litert"
    assert cls.__module__.startswith("ai_edge_litert")


@pytest.mark.parametrize("mode", ["window", "stateful"])
def test_int8_rmse_within_5_percent_of_float_on_the_test_split(mode: str) -> None:
    path = trained(mode)
    metrics = json.loads((path / "metrics.json").read_text())
    start = metrics["per_series"]["learnable"]["split"]["test"][0]
    s = learnable_series()
    f32 = evaluate_series(edge_gru.load(path, backend="tflite"), s, start=start)
    i8 = evaluate_series(edge_gru.load(path, backend="tflite-int8"), s, start=start)
    assert f32.n == i8.n > 100
    assert i8.rmse <= 1.05 * f32.rmse
    assert i8.rmse != f32.rmse  # really a different (quantized) model
    assert metrics["tflite"]["test_rmse_int8"] == pytest.approx(i8.rmse, rel=1e-6)


def test_int8_model_is_fully_integer() -> None:
    from ai_edge_litert.interpreter import Interpreter

    path = trained("stateful")
    it = Interpreter(model_path=str(path / STEP_INT8))
    types = {d["dtype"] for d in it.get_tensor_details() if d["name"] and "weights" not in d["name"]}
    assert np.int8 in types
    ops = {op["op_name"] for op in it._get_ops_details()}
    assert "FULLY_CONNECTED" in ops
    # every fully-connected layer runs on int8 inputs and int8 weights
    for op in it._get_ops_details():
        if op["op_name"] == "FULLY_CONNECTED":
            assert {it.get_tensor_details()[i]["dtype"] for i in op["inputs"][:2]} == {np.int8}


def test_tensors_are_mapped_by_name_not_position() -> None:
    path = trained("stateful")
    backend = edge_gru.load(path, backend="tflite").backend
    assert isinstance(backend, TFLiteBackend)
    it = backend._batch(1).interpreter
    names = {d["index"]: d["name"] for d in it.get_input_details()}
    # the converter orders inputs alphabetically: h_prev comes first, so position would be wrong
    assert INPUT_H in names[min(names)] and INPUT_X in names[max(names)]
    assert backend._tensors[INPUT_X].index == max(names)


def test_bundle_without_tflite_file_is_refused_clearly(tmp_path: Path) -> None:
    bundle = load_bundle(trained("window"))
    write_bundle(tmp_path / "b", bundle.manifest, bundle.weights)
    with pytest.raises(BackendUnavailableError, match=r"has no step_int8\.tflite"):
        edge_gru.load(tmp_path / "b", backend="tflite-int8")


def test_wrongly_named_model_is_refused(tmp_path: Path) -> None:
    import tensorflow as tf

    bundle = load_bundle(trained("stateful"))
    u = bundle.manifest.units

    class Wrong(tf.Module):
        @tf.function(
            input_signature=[
                tf.TensorSpec([None, 1], tf.float32, name="a"),
                tf.TensorSpec([None, u], tf.float32, name="b"),
            ]
        )
        def step(self, a: tf.Tensor, b: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"out": a + tf.reduce_sum(b, axis=1, keepdims=True), "state": b}

    module = Wrong()
    blob = tf.lite.TFLiteConverter.from_concrete_functions([module.step.get_concrete_function()], module).convert()
    write_bundle(tmp_path / "w", bundle.manifest, bundle.weights, {STEP_F32: blob})
    with pytest.raises(BundleError, match="no tensor\\(s\\) named x_t, h_prev, y, h_t"):
        edge_gru.load(tmp_path / "w", backend="tflite")


def test_batches_use_cached_power_of_two_interpreters() -> None:
    path = trained("stateful")
    model = edge_gru.load(path, backend="tflite")
    pool = model.pool(max_streams=100)
    for n in (1, 3, 4, 5, 17):
        pool.update([f"s{i}" for i in range(n)], np.full(n, 10.0))
    assert sorted(model.backend._batches) == [1, 4, 8, 32]
