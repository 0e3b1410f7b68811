"""The trainer: real small Keras models, compared with persistence, Keras and each other."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import edge_gru
from edge_gru.bundle import STEP_F32, STEP_INT8, load_bundle
from edge_gru.cli import main
from edge_gru.evaluation import evaluate_series
from edge_gru.series import Series
from tests.trained_models import learnable_series, trained, write_csv

pytest.importorskip("tensorflow")


@pytest.mark.parametrize("mode", ["window", "stateful"])
def test_trained_gru_beats_persistence_and_bundle_is_complete(mode: str) -> None:
    path = trained(mode)
    bundle = load_bundle(path)
    m = bundle.manifest
    assert m.mode == mode
    assert {"metrics.json", "weights.npz"} <= set(m.files)
    assert {STEP_F32, STEP_INT8} <= set(m.files)
    metrics = json.loads((path / "metrics.json").read_text())
    test = metrics["test"]
    assert test["gru"]["mae"] < 0.8 * test["persistence"]["mae"]
    assert test["seasonal_naive"]["season"] == 24
    assert m.training["test_mae"] == test["gru"]["mae"]
    assert metrics["tflite"]["step_f32_bytes"] == (path / STEP_F32).stat().st_size
    assert metrics["tflite"]["step_int8_bytes"] == (path / STEP_INT8).stat().st_size
    # The metrics are what the pool produces on the test split: recompute them independently.
    s = learnable_series()
    split = metrics["per_series"]["learnable"]["split"]["test"][0]
    scores = evaluate_series(edge_gru.load(path, backend="numpy"), s, start=split)
    assert scores.n == test["n"]
    assert scores.mae == pytest.approx(test["gru"]["mae"], rel=1e-4)
    assert scores.persistence_mae == pytest.approx(test["persistence"]["mae"], rel=1e-12)


def test_normalization_is_fitted_on_the_training_split_only() -> None:
    m = load_bundle(trained("window")).manifest
    s = learnable_series()
    train_rows = int(len(s) - round(0.15 * len(s)) * 2)
    assert m.normalization.kind == "fixed"
    assert m.normalization.input_mean[0] == pytest.approx(float(np.mean(s.target_values[:train_rows])))
    assert m.normalization.input_mean[0] != pytest.approx(float(np.mean(s.target_values)), abs=1e-6)
    assert m.sample_period_s == 60.0


def test_causal_model_matches_serving_normalization() -> None:
    path = trained("causal")
    m = load_bundle(path).manifest
    assert m.normalization.kind == "causal" and m.sample_period_s is None
    metrics = json.loads((path / "metrics.json").read_text())
    assert metrics["test"]["gru"]["mae"] < 0.8 * metrics["test"]["persistence"]["mae"]


def test_keras_and_numba_agree(tmp_path: Path) -> None:
    from edge_gru.train.keras_backend import load_keras

    rng = np.random.default_rng(3)
    for mode in ("window", "stateful"):
        path = trained(mode)
        keras_model = load_keras(path)
        numba_model = edge_gru.load(path, backend="numba")
        windows = rng.normal(10, 3, (64, 8, 1))
        np.testing.assert_allclose(numba_model.predict(windows), keras_model.predict(windows), rtol=0, atol=1e-5 * 10)
        z = rng.normal(0, 1, (40, 1)).astype(np.float32)
        h_k = np.zeros((1, keras_model.backend.state_size), np.float32)
        h_n = np.zeros((1, 12), np.float32)
        rows = np.zeros(1, np.int64)
        for t in range(40):
            yk = keras_model.backend.step(z[t : t + 1], h_k, rows)
            yn = numba_model.backend.step(z[t : t + 1], h_n, rows)
            np.testing.assert_allclose(yn, yk, atol=1e-5)
        np.testing.assert_allclose(h_n, h_k, atol=1e-5)


def test_same_seed_same_model_different_seed_different_model(tmp_path: Path) -> None:
    from edge_gru.train.trainer import TrainConfig, train

    s = learnable_series(n=400)
    cfg = TrainConfig(layers=(4, 3), window=4, epochs=2, batch_size=32, int8=False, seed=7)
    a = train(s, tmp_path / "a", cfg).bundle.weights
    b = train(s, tmp_path / "b", cfg).bundle.weights
    c = train(s, tmp_path / "c", replace(cfg, seed=8))
    for key, arr in a.as_dict().items():
        assert np.array_equal(arr, b.as_dict()[key]), key
    assert not np.array_equal(a.layer(0)["kernel"], c.bundle.weights.layer(0)["kernel"])
    assert load_bundle(tmp_path / "a").id == load_bundle(tmp_path / "b").id


def test_stateful_training_resets_at_gaps(tmp_path: Path) -> None:
    """Segments split by a missing value never share a training sequence's state."""
    from edge_gru.train import datasets

    values = learnable_series(n=300).target_values.copy()
    values[100] = np.nan
    s = Series.from_arrays(values, times=60.0 * np.arange(300))
    split = datasets.chronological_split(s, 0.15, 0.15, min_rows=10)
    norm = datasets.fit_fixed([(s, split)], clip=8.0)
    prepared = datasets.prepare(s, split, norm)
    tracks = datasets.tracks([prepared], "train", warmup=1)
    assert [t.z.shape[0] for t in tracks] == [100, split.train - 101]
    # the row before the gap has no target (its next sample is missing)
    assert tracks[0].w[-1] == 0.0 and np.isnan(prepared.target[99, 0])


def test_horizon_targets_are_the_next_k_samples_in_the_segment() -> None:
    """Step j of row t is (x[t+j] - offset[t]) / scale[t]; missing where t+j leaves the segment or the part."""
    from edge_gru.train import datasets

    values = learnable_series(n=300).target_values.copy()
    values[100] = np.nan
    s = Series.from_arrays(values, times=60.0 * np.arange(300))
    split = datasets.chronological_split(s, 0.15, 0.15, min_rows=10)
    for kind in ("fixed", "causal"):
        norm = (
            datasets.fit_fixed([(s, split)], clip=0.0)
            if kind == "fixed"
            else datasets.Normalization(kind="causal", halflife=24.0, clip=0.0)
        )
        one = datasets.prepare(s, split, norm)
        p = datasets.prepare(s, split, norm, horizon=3)
        assert p.target.shape == (300, 3) and one.target.shape == (300, 1)
        np.testing.assert_array_equal(p.target[:, 0], one.target[:, 0])  # step 1 is the one-step target
        for t in (5, 50, 150):
            for j in range(3):
                expected = (values[t + j + 1] - p.offset[t]) / p.scale[t]
                assert p.target[t, j] == pytest.approx(expected, rel=1e-5), (kind, t, j)
        assert np.isfinite(p.target[96]).all() and np.isnan(p.target[97, 2]) and np.isfinite(p.target[97, :2]).all()
        assert np.isnan(p.target[99]).all() and np.isnan(p.target[299]).all() and np.isnan(p.target[297, 2])
    x, y, _ = datasets.windows([p], "train", 6)
    assert x.shape[1:] == (6, 1) and y.shape == (x.shape[0], 3) and np.isfinite(y).all()
    # no training target reaches into the validation rows
    assert x.shape[0] == (97 - 5) + (split.train - 101 - 6 - 2)
    tracks = datasets.tracks([p], "val", warmup=1)
    assert all(t.y.shape[1] == 3 for t in tracks)


def test_cli_trains_a_stacked_network_with_a_horizon(tmp_path: Path) -> None:
    """--layers 8,4 --dense 4 --horizon 3: the bundle holds that network, forecasts 3 steps, scores each step."""
    from edge_gru.layers import DenseLayer, GRULayer, Network
    from edge_gru.train.keras_backend import load_keras

    series = learnable_series(n=600)
    csv = write_csv(tmp_path / "series.csv", series, column="load")
    runner = CliRunner()
    for mode in ("window", "stateful"):
        out = tmp_path / mode
        args = ["train", str(csv), "--column", "load", "--out", str(out), "--mode", mode, "--window", "6"]
        args += [
            "--layers",
            "8,4",
            "--dense",
            "4",
            "--horizon",
            "3",
            "--epochs",
            "3",
            "--bptt",
            "16",
            "--dropout",
            "0.1",
        ]
        result = runner.invoke(main, [*args, "--json"])
        assert result.exit_code == 0, result.output
        metrics = json.loads(result.stdout)
        model = edge_gru.load(out, backend="numba")
        assert model.manifest.network == Network(1, (GRULayer(8), GRULayer(4), DenseLayer(4, "relu"), DenseLayer(3)))
        assert model.manifest.mode == mode and model.backend.state_size == 12
        horizon = metrics["test"]["horizon"]
        assert len(horizon["mae"]) == len(horizon["persistence_mae"]) == 3 and min(horizon["n"]) > 50
        # step 1 scored the horizon way equals the pool's one-step score
        assert horizon["mae"][0] == pytest.approx(metrics["test"]["gru"]["mae"], rel=1e-6)
        assert horizon["persistence_mae"][0] == pytest.approx(metrics["test"]["persistence"]["mae"], rel=1e-9)
        windows = series.target_values[100:136].reshape(6, 6, 1)
        forecasts = model.predict(windows)
        assert forecasts.shape == (6, 3) and np.isfinite(forecasts).all()
        np.testing.assert_allclose(forecasts, load_keras(out).predict(windows), atol=1e-4)
        pool = model.pool(max_streams=2)
        for t in range(20):
            r = pool.update_detailed(["s"], series.target_values[t : t + 1])
        assert r.values is not None and r.values.shape == (1, 3) and r.values[0, 0] == r.forecasts[0]


def test_cli_train_with_lstm_and_season(tmp_path: Path) -> None:
    csv = write_csv(tmp_path / "series.csv", learnable_series(n=600), column="load")
    out = tmp_path / "bundle"
    result = CliRunner().invoke(
        main,
        [
            "train",
            str(csv),
            "--column",
            "load",
            "--out",
            str(out),
            "--units",
            "6",
            "--window",
            "6",
            "--epochs",
            "3",
            "--cell",
            "lstm",
            "--season",
            "24",
            "--no-int8",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    test = metrics["test"]
    for key in ("gru", "persistence", "seasonal_naive", "lstm", "tflite"):
        assert test[key]["mae"] > 0, key
    bundle = load_bundle(out)
    assert bundle.manifest.features == ("load",) and STEP_INT8 not in bundle.manifest.files


@pytest.mark.parametrize(
    ("text", "args", "message"),
    [
        ("", [], "empty"),
        (",v\n0,1\n60,2\n", ["--column", "w"], "no target column 'w'"),
        (",v\n0,1\n60,x\n", [], "line 3, column 'v': 'x' is not a number"),
        (",v\n" + "".join(f"{60 * i},{i}\n" for i in range(15)), [], "left for training"),
        (",v\n" + "".join(f"{60 * i},{i if i % 3 else 'nan'}\n" for i in range(300)), [], "needs at least 11"),
    ],
)
def test_cli_train_bad_csv_gives_clear_error(tmp_path: Path, text: str, args: list[str], message: str) -> None:
    csv = tmp_path / "bad.csv"
    csv.write_text(text)
    column = [] if "--column" in args else ["--column", "v"]
    result = CliRunner().invoke(
        main, ["train", str(csv), *column, *args, "--out", str(tmp_path / "o"), "--epochs", "1"]
    )
    assert result.exit_code == 1
    assert message in result.output
    assert str(csv) in result.output or message == "left for training"
    assert not (tmp_path / "o").exists()


def test_trainer_guard_records_a_model_that_wins() -> None:
    metrics = json.loads((trained("window") / "metrics.json").read_text())
    guard = metrics["guard"]
    assert guard["float_beats_persistence"] is True
    assert guard["int8_beats_persistence"] is True
    assert guard["warnings"] == [] and guard["int8_loses_while_float_wins"] is False
    test = metrics["test"]
    assert guard["mae_ratio"]["learnable"]["gru"] == pytest.approx(test["gru"]["mae"] / test["persistence"]["mae"])


def test_trainer_guard_warns_when_persistence_wins(tmp_path: Path) -> None:
    """On a random walk persistence is the optimal forecast: a briefly trained GRU loses, and says so."""
    rng = np.random.default_rng(5)
    walk = Series.from_arrays(
        50 + np.cumsum(rng.normal(0, 1, 3000)), times=1_700_000_000.0 + 60.0 * np.arange(3000), source="walk"
    )
    csv = write_csv(tmp_path / "walk.csv", walk, column="level")
    out = tmp_path / "bundle"
    args = ["train", str(csv), "--column", "level", "--out", str(out), "--units", "4", "--window", "6"]
    result = CliRunner().invoke(main, [*args, "--epochs", "2", "--json"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    guard = metrics["guard"]
    # the recorded ratios are the served model's, recomputed here independently on the test split
    start = metrics["per_series"]["walk"]["split"]["test"][0]
    for backend, key in (("numpy", "gru"), ("tflite-int8", "tflite-int8")):
        scores = evaluate_series(edge_gru.load(out, backend=backend), walk, start=start)
        assert guard["mae_ratio"]["walk"][key] == pytest.approx(scores.ratio, rel=1e-3)
    assert guard["mae_ratio"]["walk"]["gru"] >= 1.0
    assert guard["float_beats_persistence"] is False
    assert any("float model loses to persistence" in w for w in guard["warnings"])
    assert "WARNING: walk: the float model loses to persistence" in result.stderr
    assert load_bundle(out).manifest.training["guard_warnings"] == len(guard["warnings"])


def test_the_guard_points_a_fixed_normalization_int8_loss_at_causal_normalization() -> None:
    """A fixed-normalization network outputs the level; the advice for an int8 loss names the causal rule."""
    from edge_gru.train.trainer import persistence_guard

    metrics = {
        "per_series": {
            "sst": {"persistence": {"mae": 1.0}, "gru": {"mae": 0.9}, "tflite-int8": {"mae": 3.2}},
        }
    }
    fixed = persistence_guard(metrics, normalization="fixed")
    assert fixed["int8_loses_while_float_wins"] and fixed["float_beats_persistence"]
    assert len(fixed["warnings"]) == 1 and "while the float model wins" in fixed["warnings"][0]
    assert "--normalization causal" in fixed["warnings"][0]
    causal = persistence_guard(metrics, normalization="causal")
    assert len(causal["warnings"]) == 1 and "--normalization causal" not in causal["warnings"][0]
    metrics["per_series"]["sst"]["gru"]["mae"] = 1.2  # the float model loses too
    both = persistence_guard(metrics, normalization="fixed")["warnings"]
    assert len(both) == 2 and all("--normalization causal" in w for w in both)
