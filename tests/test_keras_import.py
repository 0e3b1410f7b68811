"""import-keras accepts GRU stacks with dense heads and refuses anything else, naming the layer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras", reason="import-keras needs the [train] extra")

import edge_gru  # noqa: E402
from edge_gru.errors import BundleError  # noqa: E402
from edge_gru.layers import DenseLayer, GRULayer, Network  # noqa: E402
from edge_gru.train.keras_import import import_keras  # noqa: E402


def _product_card_model():  # type: ignore[no-untyped-def]
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((10, 1)), keras.layers.GRU(50, activation="tanh"), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    return model


def test_product_card_model_through_the_cli(tmp_path: Path) -> None:
    """GRU(50, tanh, input (10, 1)) + Dense(1), adam/mse, saved as .keras, imported by the CLI."""
    model = _product_card_model()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 10, 1)).astype(np.float32)
    model.fit(x, x[:, -1, :] * 0.5, epochs=1, verbose=0)
    path = tmp_path / "card.keras"
    model.save(path)
    out = tmp_path / "bundle"
    run = subprocess.run(
        [sys.executable, "-m", "edge_gru.cli", "import-keras", str(path), "--out", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    loaded = edge_gru.load(out, backend="numba")
    assert loaded.manifest.window == 10 and loaded.manifest.mode == "window"
    assert loaded.manifest.network == Network(1, (GRULayer(50), DenseLayer(1)))
    np.testing.assert_allclose(loaded.predict(x), model.predict(x, verbose=0)[:, 0], atol=1e-5)
    info = subprocess.run(
        [sys.executable, "-m", "edge_gru.cli", "info", "--json", str(out)], capture_output=True, text=True, check=True
    )
    layers = json.loads(info.stdout)["architecture"]["layers"]
    assert layers == [
        {"type": "gru", "units": 50, "reset_after": True},
        {"type": "dense", "units": 1, "activation": "linear"},
    ]


def _sequential(*layers):  # type: ignore[no-untyped-def]
    return lambda: keras.Sequential([keras.Input((12, 2)), *layers])


def _functional_gru50():  # type: ignore[no-untyped-def]
    inputs = keras.Input((12, 2))
    return keras.Model(inputs, keras.layers.Dense(1)(keras.layers.GRU(50)(inputs)))


ACCEPTED = {
    "GRU(64, seq) > GRU(32) > Dense(1)": (
        _sequential(keras.layers.GRU(64, return_sequences=True), keras.layers.GRU(32), keras.layers.Dense(1)),
        Network(2, (GRULayer(64), GRULayer(32), DenseLayer(1))),
    ),
    "GRU > Dropout > Dense(1)": (
        _sequential(keras.layers.GRU(16), keras.layers.Dropout(0.3), keras.layers.Dense(1)),
        Network(2, (GRULayer(16), DenseLayer(1))),
    ),
    "GRU > Dense(16, relu) > Dense(1)": (
        _sequential(keras.layers.GRU(16), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1)),
        Network(2, (GRULayer(16), DenseLayer(16, "relu"), DenseLayer(1))),
    ),
    "GRU > Dense(3)": (
        _sequential(keras.layers.GRU(16, reset_after=False), keras.layers.Dense(3)),
        Network(2, (GRULayer(16, reset_after=False), DenseLayer(3))),
    ),
    "functional GRU(50) > Dense(1)": (_functional_gru50, Network(2, (GRULayer(50), DenseLayer(1)))),
}


@pytest.mark.parametrize("case", list(ACCEPTED))
def test_supported_models_import_and_match_predict(tmp_path: Path, case: str) -> None:
    build, network = ACCEPTED[case]
    keras.utils.set_random_seed(4)
    model = build()
    rng = np.random.default_rng(4)
    for layer in model.layers:  # random biases, so they are exercised
        arrays = layer.get_weights()
        if arrays:
            arrays[-1] = rng.normal(0, 0.3, arrays[-1].shape).astype(np.float32)
            layer.set_weights(arrays)
    import_keras(model, tmp_path / "b")
    x = rng.normal(0, 1.5, size=(300, 12, 2)).astype(np.float32)
    expected = model.predict(x, verbose=0)
    for backend in ("numba", "numpy"):
        loaded = edge_gru.load(tmp_path / "b", backend)
        assert loaded.manifest.network == network and loaded.manifest.window == 12
        got = loaded.predict(x)
        assert got.shape == ((300,) if network.horizon == 1 else (300, network.horizon)), backend
        assert np.max(np.abs(got.reshape(expected.shape) - expected)) <= 1e-5, backend


def _functional(build):  # type: ignore[no-untyped-def]
    def make():  # type: ignore[no-untyped-def]
        inputs = keras.Input((5, 1))
        return keras.Model(inputs, build(inputs))

    return make


REFUSED = [
    (lambda: [keras.layers.LSTM(4), keras.layers.Dense(1)], r"layer 'lstm\w*' \(LSTM\) is not supported; supported is"),
    (
        lambda: [keras.layers.Conv1D(2, 3), keras.layers.GRU(4), keras.layers.Dense(1)],
        r"layer 'conv1d\w*' \(Conv1D\) is not supported",
    ),
    (
        lambda: [keras.layers.Bidirectional(keras.layers.GRU(4)), keras.layers.Dense(1)],
        r"layer 'bidirectional\w*' \(Bidirectional\) is not supported",
    ),
    (
        lambda: [keras.layers.Dense(3), keras.layers.GRU(4), keras.layers.Dense(1)],
        r"Dense layer 'dense\w*' \(Dense\) comes before any GRU",
    ),
    (
        lambda: [
            keras.layers.GRU(4, return_sequences=True),
            keras.layers.Dense(3),
            keras.layers.GRU(4),
            keras.layers.Dense(1),
        ],
        r"GRU layer 'gru\w*' \(GRU\) follows a Dense layer",
    ),
    (
        lambda: [keras.layers.GRU(4, return_sequences=True), keras.layers.Dense(1)],
        r"return_sequences=True on the last GRU",
    ),
    (lambda: [keras.layers.GRU(4), keras.layers.Dense(1, activation="softmax")], r"activation 'softmax'"),
    (lambda: [keras.layers.GRU(4), keras.layers.Dense(2, activation="gelu")], r"activation 'gelu'"),
    (lambda: [keras.layers.GRU(4, activation="relu"), keras.layers.Dense(1)], r"activation='relu'"),
    (lambda: [keras.layers.GRU(4, recurrent_activation="hard_sigmoid"), keras.layers.Dense(1)], "hard_sigmoid"),
    (lambda: [keras.layers.GRU(4, go_backwards=True), keras.layers.Dense(1)], "go_backwards"),
    (lambda: [keras.layers.GRU(4)], r"ends in layer 'gru\w*' \(GRU\), not a Dense layer"),
    (lambda: [keras.layers.GRU(4), keras.layers.Dropout(0.2)], r"ends in layer 'gru\w*' \(GRU\)"),
]


@pytest.mark.parametrize(("layers", "message"), REFUSED)
def test_unsupported_models_are_refused_by_name(tmp_path: Path, layers, message: str) -> None:  # type: ignore[no-untyped-def]
    model = keras.Sequential([keras.Input((5, 1)), *layers()])
    with pytest.raises(BundleError, match=message):
        import_keras(model, tmp_path / "b")
    assert not (tmp_path / "b" / "manifest.json").exists()


def _branching(inputs):  # type: ignore[no-untyped-def]
    a = keras.layers.GRU(3, name="left")(inputs)
    b = keras.layers.GRU(3, name="right")(inputs)
    return keras.layers.Dense(1)(keras.layers.Add(name="merge")([a, b]))


def _side_output():  # type: ignore[no-untyped-def]
    inputs = keras.Input((5, 1))
    g = keras.layers.GRU(3)(inputs)
    return keras.Model(inputs, [keras.layers.Dense(1)(g), keras.layers.Dense(2)(g)])


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (_functional(_branching), r"layer 'merge' \(Add\) takes 2 inputs"),
        (_side_output, r"has 1 inputs and 2 outputs"),
        (
            _functional(lambda x: keras.layers.Dense(1)(keras.layers.LSTM(3, name="lstm_here")(x))),
            r"'lstm_here' \(LSTM\)",
        ),
    ],
)
def test_functional_graphs_that_are_not_a_chain_are_refused(tmp_path: Path, build, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(BundleError, match=message):
        import_keras(build(), tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_gru_and_dense_without_bias(tmp_path: Path) -> None:
    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [
            keras.Input((6, 2)),
            keras.layers.GRU(5, use_bias=False, return_sequences=True),
            keras.layers.GRU(3, use_bias=False, reset_after=False),
            keras.layers.Dense(2, use_bias=False, activation="tanh"),
        ]
    )
    import_keras(model, tmp_path / "b")
    x = np.random.default_rng(1).normal(size=(64, 6, 2)).astype(np.float32)
    np.testing.assert_allclose(
        edge_gru.load(tmp_path / "b", backend="numpy").predict(x), model.predict(x, verbose=0), atol=1e-5
    )


def test_cli_reports_a_missing_file(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "edge_gru.cli", "import-keras", str(tmp_path / "nope.keras"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode != 0 and "nope.keras: no such Keras model file" in run.stderr


def test_cli_refuses_an_lstm_file_by_layer_name(tmp_path: Path) -> None:
    model = keras.Sequential([keras.Input((5, 1)), keras.layers.LSTM(3, name="my_lstm"), keras.layers.Dense(1)])
    path = tmp_path / "lstm.keras"
    model.save(path)
    run = subprocess.run(
        [sys.executable, "-m", "edge_gru.cli", "import-keras", str(path), "--out", str(tmp_path / "b")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode != 0 and "layer 'my_lstm' (LSTM) is not supported; supported is" in run.stderr
    assert not (tmp_path / "b").exists()
