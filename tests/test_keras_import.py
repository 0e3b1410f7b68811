"""import-keras accepts GRU(+Dense(1)) models and refuses anything else, naming the layer or option."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras", reason="import-keras needs the [train] extra")

import edge_gru  # noqa: E402
from edge_gru.errors import BundleError  # noqa: E402
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
    assert loaded.manifest.window == 10 and loaded.manifest.mode == "window" and loaded.manifest.units == 50
    np.testing.assert_allclose(loaded.predict(x), model.predict(x, verbose=0)[:, 0], atol=1e-5)
    info = subprocess.run(
        [sys.executable, "-m", "edge_gru.cli", "info", str(out)], capture_output=True, text=True, check=True
    )
    assert "GRU(50, reset_after=True) + Dense(1)" in info.stdout and "window 10" in info.stdout


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        (lambda: [keras.layers.LSTM(4), keras.layers.Dense(1)], "not a GRU"),
        (lambda: [keras.layers.GRU(4), keras.layers.Dense(2)], "must be Dense\\(1\\)"),
        (lambda: [keras.layers.GRU(4), keras.layers.Dense(1, activation="relu")], "linear activation"),
        (lambda: [keras.layers.GRU(4, activation="relu"), keras.layers.Dense(1)], "activation='relu'"),
        (lambda: [keras.layers.GRU(4, recurrent_activation="hard_sigmoid"), keras.layers.Dense(1)], "hard_sigmoid"),
        (lambda: [keras.layers.GRU(4, go_backwards=True), keras.layers.Dense(1)], "go_backwards"),
        (
            lambda: [keras.layers.GRU(4, return_sequences=True), keras.layers.GRU(4), keras.layers.Dense(1)],
            "exactly \\[GRU, Dense\\(1\\)\\]",
        ),
        (lambda: [keras.layers.GRU(4)], "exactly \\[GRU, Dense\\(1\\)\\]"),
    ],
)
def test_unsupported_models_are_refused_by_name(tmp_path: Path, layers, message: str) -> None:  # type: ignore[no-untyped-def]
    model = keras.Sequential([keras.Input((5, 1)), *layers()])
    with pytest.raises(BundleError, match=message):
        import_keras(model, tmp_path / "b")
    assert not (tmp_path / "b" / "manifest.json").exists()


def test_functional_model_is_refused(tmp_path: Path) -> None:
    inputs = keras.Input((5, 1))
    model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.GRU(3)(inputs)))
    with pytest.raises(BundleError, match=r"only keras\.Sequential"):
        import_keras(model, tmp_path / "b")


def test_gru_without_bias(tmp_path: Path) -> None:
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((6, 2)), keras.layers.GRU(5, use_bias=False), keras.layers.Dense(1)])
    import_keras(model, tmp_path / "b")
    x = np.random.default_rng(1).normal(size=(64, 6, 2)).astype(np.float32)
    np.testing.assert_allclose(
        edge_gru.load(tmp_path / "b", backend="numpy").predict(x), model.predict(x, verbose=0)[:, 0], atol=1e-5
    )


def test_cli_reports_a_missing_file(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "edge_gru.cli", "import-keras", str(tmp_path / "nope.keras"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode != 0 and "nope.keras: no such Keras model file" in run.stderr
