"""TFLite export and backends: real LiteRT interpreter, float32 and full-int8 single-step models.

Any layer list converts: the float model must equal the numpy reference (and the numba
stack kernels) on random stacks, and the int8 model must stay within 5 % of the float
model's RMSE on trained weights (a Keras-trained GRU stack, and the shipped default).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest

import edge_gru
from edge_gru import reference
from edge_gru.backends.tflite_backend import INPUT_H, INPUT_X, TFLiteBackend, interpreter_class
from edge_gru.bundle import STEP_F32, STEP_INT8, Normalization, load_bundle, write_bundle
from edge_gru.errors import BackendUnavailableError, BundleError
from edge_gru.evaluation import evaluate_series
from edge_gru.layers import DenseLayer, GRULayer, Network, NetworkWeights
from edge_gru.normalization import normalize_series
from edge_gru.train.tflite_export import calibration_states, convert_float, convert_int8
from tests.bundles import make_bundle, random_network_weights
from tests.trained_models import learnable_series, trained

DEFAULT = Path(__file__).resolve().parents[1] / "models" / "default"

STACKS = {
    "gru-dense1": Network(1, (GRULayer(6), DenseLayer(1))),
    "gru-gru-dense3": Network(2, (GRULayer(5), GRULayer(4, reset_after=False), DenseLayer(3))),
    "3gru-relu": Network(
        4, (GRULayer(4, reset_after=False), GRULayer(6), GRULayer(3), DenseLayer(5, "relu"), DenseLayer(3))
    ),
    "2gru-tanh": Network(3, (GRULayer(7), GRULayer(5), DenseLayer(4, "tanh"), DenseLayer(1))),
    "3gru-sigmoid": Network(
        1,
        (
            GRULayer(3),
            GRULayer(3, reset_after=False),
            GRULayer(4, reset_after=False),
            DenseLayer(6, "sigmoid"),
            DenseLayer(2),
        ),
    ),
    "2gru-linear-dense": Network(
        2, (GRULayer(4, reset_after=False), GRULayer(4), DenseLayer(4), DenseLayer(3, "tanh"))
    ),
}


@functools.cache
def _stack_bundle(root: Path, name: str) -> Path:
    weights = random_network_weights(STACKS[name], seed=0, scale=0.8)  # large enough that every output moves
    make_bundle(root / name, weights=weights, extra_files={STEP_F32: convert_float(weights)})
    return root / name


@pytest.fixture(scope="module")
def stack_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("stacks")


def test_litert_is_preferred() -> None:
    cls, runtime = interpreter_class()
    assert runtime == "ai_edge_litert"
    assert cls.__module__.startswith("ai_edge_litert")


@pytest.mark.parametrize("name", sorted(STACKS))
def test_float_model_equals_the_reference_and_numba_on_random_stacks(stack_root: Path, name: str) -> None:
    path = _stack_bundle(stack_root, name)
    net = STACKS[name]
    weights = load_bundle(path).weights
    tfl = edge_gru.load(path, backend="tflite").backend
    numba = edge_gru.load(path, backend="numba").backend
    assert tfl.state_size == net.state_size and tfl.horizon == net.horizon
    rng = np.random.default_rng(1)
    s = 5
    h_tfl = rng.normal(0, 0.5, (s, net.state_size)).astype(np.float32)
    h_ref, h_nb = h_tfl.copy(), h_tfl.copy()
    rows = np.arange(s, dtype=np.int64)
    for _ in range(20):  # closed loop: each step starts from the states the previous one left
        x = rng.normal(0, 1.5, (s, net.input_features)).astype(np.float32)
        y_ref = reference.gru_step(weights, x, h_ref)
        y_tfl = tfl.step(x, h_tfl, rows)
        y_nb = numba.step(x, h_nb, rows)
        assert y_tfl.shape == (s, net.horizon)
        np.testing.assert_allclose(y_tfl, y_ref, atol=1e-4, rtol=0)
        np.testing.assert_allclose(y_tfl, y_nb, atol=1e-4, rtol=0)
        np.testing.assert_allclose(h_tfl, h_ref, atol=1e-4, rtol=0)
        np.testing.assert_allclose(h_tfl, h_nb, atol=1e-4, rtol=0)
    # a stream listed twice advances twice, in order; other rows of h stay untouched
    x = rng.normal(0, 1, (3, net.input_features)).astype(np.float32)
    rows3 = np.array([3, 1, 3], dtype=np.int64)
    h_ref = h_tfl.copy()
    y = tfl.step(x, h_tfl, rows3)
    want = np.concatenate([reference.gru_step(weights, x[i : i + 1], h_ref[r : r + 1]) for i, r in enumerate(rows3)])
    np.testing.assert_allclose(y, want, atol=1e-4, rtol=0)
    np.testing.assert_allclose(h_tfl, h_ref, atol=1e-4, rtol=0)
    windows = rng.normal(0, 1, (9, 6, net.input_features)).astype(np.float32)
    out = tfl.run_windows(windows)
    assert out.shape == (9, net.horizon)
    want = reference.run_windows(weights, windows)
    assert want.std(axis=0).min() > 0.01  # every output depends on the input: agreement means something
    np.testing.assert_allclose(out, want, atol=1e-4, rtol=0)


# -- int8 on trained weights ----------------------------------------------------------------------

KERAS_STACK = Network(1, (GRULayer(12), GRULayer(8, reset_after=False), DenseLayer(8, "relu"), DenseLayer(3)))
WINDOW = 24


def _windows(z: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    n = z.shape[0] - WINDOW - k + 1
    x = np.stack([z[i : i + WINDOW] for i in range(n)])[:, :, None]
    y = np.stack([z[i + WINDOW : i + WINDOW + k] for i in range(n)])
    return x.astype(np.float32), y.astype(np.float32)


@pytest.fixture(scope="module")
def keras_stack(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, np.ndarray, np.ndarray]:
    """A real Keras GRU(12) > GRU(8, reset_after=False) > Dense(8, relu) > Dense(3) trained a few seconds.

    Returns the bundle (float and int8 step models), the test windows, their targets and Keras' forecasts.
    """
    import keras

    values = learnable_series().target_values.astype(np.float64)
    train_end = 1000
    mean, std = float(values[:train_end].mean()), float(values[:train_end].std())
    z = ((values - mean) / std).astype(np.float32)
    k = KERAS_STACK.horizon
    x_train, y_train = _windows(z[:train_end], k)
    x_test, y_test = _windows(z[train_end:], k)
    keras.utils.set_random_seed(0)
    layers = KERAS_STACK.layers
    model = keras.Sequential(
        [
            keras.Input((WINDOW, 1)),
            keras.layers.GRU(layers[0].units, return_sequences=True),
            keras.layers.GRU(layers[1].units, reset_after=False),
            keras.layers.Dense(layers[2].units, activation="relu"),
            keras.layers.Dense(k),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(5e-3), loss="mse")
    model.fit(x_train, y_train, epochs=12, batch_size=32, verbose=0)
    weights = NetworkWeights.from_keras_arrays(KERAS_STACK, [layer.get_weights() for layer in model.layers])
    predicted = np.asarray(model.predict(x_test, verbose=0), dtype=np.float32)
    calibration = calibration_states(weights, [z[i : i + 200, None] for i in range(0, train_end, 200)], samples=500)
    extra = {STEP_F32: convert_float(weights), STEP_INT8: convert_int8(weights, calibration)}
    norm = Normalization(kind="fixed", input_mean=(mean,), input_std=(std,), target_mean=mean, target_std=std)
    path = tmp_path_factory.mktemp("keras-stack") / "b"
    make_bundle(path, weights=weights, window=WINDOW, mode="window", normalization=norm, extra_files=extra)
    return path, x_test, y_test, predicted


def test_float_model_of_a_trained_keras_stack_equals_keras_predict(keras_stack: tuple) -> None:
    path, x_test, _, predicted = keras_stack
    out = edge_gru.load(path, backend="tflite").backend.run_windows(x_test)
    np.testing.assert_allclose(out, predicted, atol=1e-4, rtol=0)


def test_int8_rmse_of_a_trained_stack_within_5_percent_of_float(keras_stack: tuple) -> None:
    path, x_test, y_test, _ = keras_stack
    f32 = edge_gru.load(path, backend="tflite").backend.run_windows(x_test)
    i8 = edge_gru.load(path, backend="tflite-int8").backend.run_windows(x_test)
    rmse_f = float(np.sqrt(np.mean((f32 - y_test) ** 2)))
    rmse_i = float(np.sqrt(np.mean((i8 - y_test) ** 2)))
    persistence = float(np.sqrt(np.mean((x_test[:, -1, :] - y_test) ** 2)))
    assert rmse_f < 0.6 * persistence  # the stack really learned: the comparison means something
    assert rmse_i <= 1.05 * rmse_f, (rmse_i, rmse_f)
    assert not np.array_equal(i8, f32)  # really a different (quantized) model


def test_int8_model_of_a_stack_is_fully_integer(keras_stack: tuple) -> None:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(keras_stack[0] / STEP_INT8))
    details = it.get_tensor_details()
    ops = it._get_ops_details()
    fc = [op for op in ops if op["op_name"] == "FULLY_CONNECTED"]
    assert len(fc) == 2 + 3 + 2  # GRU(reset_after) 2 matmuls, GRU(reset_after=False) 3, two dense layers
    # every fully-connected layer runs on int8 inputs and int8 weights
    for op in fc:
        assert {details[i]["dtype"] for i in op["inputs"][:2]} == {np.int8}


def test_int8_io_model_of_a_stack_serves(keras_stack: tuple, tmp_path: Path) -> None:
    """int8 inputs and outputs: the backend quantizes the state row each step with the model's scales."""
    path, x_test, y_test, _ = keras_stack
    bundle = load_bundle(path)
    values = learnable_series().target_values
    z = ((values - values[:1000].mean()) / values[:1000].std()).astype(np.float32)
    calibration = calibration_states(bundle.weights, [z[i : i + 200, None] for i in range(0, 1000, 200)], samples=500)
    blob = convert_int8(bundle.weights, calibration, int8_io=True)
    write_bundle(tmp_path / "io", bundle.manifest, bundle.weights, {STEP_INT8: blob})
    backend = edge_gru.load(tmp_path / "io", backend="tflite-int8").backend
    assert isinstance(backend, TFLiteBackend) and backend.int8_io
    i8 = backend.run_windows(x_test)
    f32 = edge_gru.load(path, backend="tflite").backend.run_windows(x_test)
    rmse_f = float(np.sqrt(np.mean((f32 - y_test) ** 2)))
    rmse_i = float(np.sqrt(np.mean((i8 - y_test) ** 2)))
    assert rmse_i <= 1.05 * rmse_f, (rmse_i, rmse_f)


def test_default_bundle_reexports_and_int8_stays_within_5_percent(tmp_path: Path) -> None:
    """The shipped single-layer model, re-exported: float equals the reference, int8 within 5 % on a real series."""
    bundle = load_bundle(DEFAULT)
    w = bundle.weights
    assert w.network.is_classic
    series = learnable_series()
    z, _, _ = normalize_series(bundle.manifest.normalization, series.target_values)
    train_end = 1000
    calibration = calibration_states(w, [z[i : i + 250] for i in range(0, train_end, 250)], samples=1000)
    extra = {STEP_F32: convert_float(w), STEP_INT8: convert_int8(w, calibration)}
    write_bundle(tmp_path / "d", bundle.manifest, w, extra)
    windows = np.stack([z[i : i + 10] for i in range(0, 400, 7)])
    out = edge_gru.load(tmp_path / "d", backend="tflite").backend.run_windows(windows)
    np.testing.assert_allclose(out, reference.run_windows(w, windows), atol=1e-4, rtol=0)
    f32 = evaluate_series(edge_gru.load(tmp_path / "d", backend="tflite"), series, start=train_end)
    i8 = evaluate_series(edge_gru.load(tmp_path / "d", backend="tflite-int8"), series, start=train_end)
    assert f32.n == i8.n > 100
    assert i8.rmse <= 1.05 * f32.rmse, (i8.rmse, f32.rmse)
    assert i8.rmse != f32.rmse
    # the shipped step models (exported before the layer list) still serve, by name
    shipped = edge_gru.load(DEFAULT, backend="tflite").backend.run_windows(windows)
    np.testing.assert_allclose(shipped, out, atol=1e-4, rtol=0)


@pytest.mark.parametrize("mode", ["window", "stateful"])
def test_trainer_int8_rmse_within_5_percent_of_float_on_the_test_split(mode: str) -> None:
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


# -- loading: by name, refusals, batching ----------------------------------------------------------


def test_tensors_are_mapped_by_name_not_position(stack_root: Path) -> None:
    backend = edge_gru.load(_stack_bundle(stack_root, "gru-gru-dense3"), backend="tflite").backend
    assert isinstance(backend, TFLiteBackend)
    it = backend._batch(1).interpreter
    names = {d["index"]: d["name"] for d in it.get_input_details()}
    # the converter orders inputs alphabetically: h_prev comes first, so position would be wrong
    assert INPUT_H in names[min(names)] and INPUT_X in names[max(names)]
    assert backend._tensors[INPUT_X].index == max(names)


def test_bundle_without_tflite_file_is_refused_clearly(tmp_path: Path) -> None:
    make_bundle(tmp_path / "b")
    with pytest.raises(BackendUnavailableError, match=r"has no step_int8\.tflite"):
        edge_gru.load(tmp_path / "b", backend="tflite-int8")


def test_wrongly_named_model_is_refused(stack_root: Path, tmp_path: Path) -> None:
    import tensorflow as tf

    bundle = load_bundle(_stack_bundle(stack_root, "gru-gru-dense3"))
    size = bundle.manifest.state_size

    class Wrong(tf.Module):
        @tf.function(
            input_signature=[
                tf.TensorSpec([None, 2], tf.float32, name="a"),
                tf.TensorSpec([None, size], tf.float32, name="b"),
            ]
        )
        def step(self, a: tf.Tensor, b: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"out": a + tf.reduce_sum(b, axis=1, keepdims=True), "state": b}

    module = Wrong()
    blob = tf.lite.TFLiteConverter.from_concrete_functions([module.step.get_concrete_function()], module).convert()
    write_bundle(tmp_path / "w", bundle.manifest, bundle.weights, {STEP_F32: blob})
    with pytest.raises(BundleError, match="no tensor\\(s\\) named x_t, h_prev, y, h_t"):
        edge_gru.load(tmp_path / "w", backend="tflite")


@pytest.mark.parametrize(
    "other",
    [
        Network(2, (GRULayer(5), GRULayer(3), DenseLayer(3))),  # state row narrower
        Network(2, (GRULayer(5), GRULayer(4, reset_after=False), DenseLayer(2))),  # horizon differs
    ],
)
def test_step_model_of_another_layer_list_is_refused(stack_root: Path, tmp_path: Path, other: Network) -> None:
    bundle = load_bundle(_stack_bundle(stack_root, "gru-gru-dense3"))
    blob = convert_float(random_network_weights(other))
    write_bundle(tmp_path / "x", bundle.manifest, bundle.weights, {STEP_F32: blob})
    with pytest.raises(BundleError, match=r"step_f32\.tflite: (input 'h_prev'|output 'y') has shape \[-1, \d\]"):
        edge_gru.load(tmp_path / "x", backend="tflite")


def test_batches_use_cached_power_of_two_interpreters(stack_root: Path) -> None:
    model = edge_gru.load(_stack_bundle(stack_root, "3gru-relu"), backend="tflite")
    pool = model.pool(max_streams=100)
    for n in (1, 3, 4, 5, 17):
        pool.update([f"s{i}" for i in range(n)], np.full((n, 4), 10.0))
    assert sorted(model.backend._batches) == [1, 4, 8, 32]
