"""A Keras-trained GRU through the C export, with the bundle's real int8 TFLite step model.

The int8 C runtime (int8 weights, one float scale per gate column, float state) must stay
at least as close to the float model as the bundle's full-integer TFLite model does: the
error bound of the int8 path the project already ships.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import edge_gru
from edge_gru.bundle import STEP_INT8, write_bundle
from edge_gru.normalization import normalize_series
from tests.test_firmware_export import (
    CAUSAL,
    FLOAT_TOL,
    assert_matches,
    export_and_build,
    pool_forecasts,
    read_series,
    run_c,
    sample_lines,
)

WINDOW = 12


@pytest.fixture(scope="module")
def trained_bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """GRU(16) trained for a few epochs on SST (causal normalization, residual targets), plus step_int8.tflite."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    from edge_gru.train.keras_import import import_keras
    from edge_gru.train.tflite_export import calibration_states, convert_int8

    values, _ = read_series("sst_neracoos_b01_30min.csv", ["temperature"], 7000)
    train = values[:4000]
    z, offset, scale = normalize_series(CAUSAL, train)
    ends = np.arange(WINDOW - 1, len(train) - 1)
    x = np.stack([z[i - WINDOW + 1 : i + 1] for i in ends])
    y = ((train[ends + 1, 0] - offset[ends]) / scale[ends]).astype(np.float32)
    keras.utils.set_random_seed(0)
    network = keras.Sequential([keras.Input((WINDOW, 1)), keras.layers.GRU(16), keras.layers.Dense(1)])
    network.compile(optimizer="adam", loss="mse")
    network.fit(x, y, epochs=4, batch_size=64, verbose=0)

    root = tmp_path_factory.mktemp("trained")
    keras_bundle = import_keras(
        network, root / "keras", window=WINDOW, mode="window", normalization=CAUSAL, features=("sst",), target="sst"
    )
    weights = keras_bundle.weights
    tflite = convert_int8(weights, calibration_states(weights, [z[:3000]]))
    bundle = write_bundle(root / "bundle", keras_bundle.manifest, weights, extra_files={STEP_INT8: tflite})
    return bundle.path, values[4000:7000]


def test_trained_model_float_export_matches_the_pool(trained_bundle: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    path, test = trained_bundle
    _, binary = export_and_build(path, tmp_path / "c")
    c, _ = run_c(binary, sample_lines(test))
    assert_matches(c, pool_forecasts(path, test), float(np.std(test)), FLOAT_TOL, min_forecasts=2900)


def test_int8_export_is_within_the_int8_tflite_models_error(
    trained_bundle: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    path, test = trained_bundle
    report, binary = export_and_build(path, tmp_path / "c8", int8=True)
    assert report.tflite_bytes == (path / STEP_INT8).stat().st_size
    c8, _ = run_c(binary, sample_lines(test))
    reference = pool_forecasts(path, test)
    pool = edge_gru.load(path, backend="tflite-int8").pool(max_streams=1)
    x = test.astype(np.float32).astype(np.float64)
    tflite = np.array([pool.update(["s"], x[i : i + 1])[0] for i in range(len(x))])
    ok = ~np.isnan(reference)
    np.testing.assert_array_equal(np.isnan(c8), ~ok)
    scale = float(np.std(test))
    c8_dev = (c8[ok] - reference[ok]) / scale
    tflite_dev = (tflite[ok] - reference[ok]) / scale
    assert np.sqrt(np.mean(c8_dev**2)) <= np.sqrt(np.mean(tflite_dev**2))
    assert np.abs(c8_dev).max() <= np.abs(tflite_dev).max()


@pytest.mark.parametrize("mode", ["stateful", "causal"])
def test_trainer_bundles_export_within_their_int8_tflite_error(mode: str, tmp_path: Path) -> None:
    """Bundles from `edge-gru train` (stateful, fixed and causal normalization, with step_int8.tflite)."""
    from tests.trained_models import trained

    path = trained(mode)
    assert (path / STEP_INT8).is_file()
    values, _ = read_series("sst_neracoos_b01_30min.csv", ["temperature"], 3000, start=9000)
    reference = pool_forecasts(path, values)
    scale = float(np.std(values))
    _, binary = export_and_build(path, tmp_path / "c")
    assert_matches(run_c(binary, sample_lines(values))[0], reference, scale, FLOAT_TOL, min_forecasts=2900)

    _, binary8 = export_and_build(path, tmp_path / "c8", int8=True)
    c8, _ = run_c(binary8, sample_lines(values))
    pool = edge_gru.load(path, backend="tflite-int8").pool(max_streams=1)
    x = values.astype(np.float32).astype(np.float64)
    tflite = np.array([pool.update(["s"], x[i : i + 1])[0] for i in range(len(x))])
    ok = ~np.isnan(reference)
    c8_rms = np.sqrt(np.mean(((c8 - reference)[ok] / scale) ** 2))
    tflite_rms = np.sqrt(np.mean(((tflite - reference)[ok] / scale) ** 2))
    assert c8_rms <= tflite_rms, (c8_rms, tflite_rms)
