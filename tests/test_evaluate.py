"""``edge-gru evaluate`` and :mod:`edge_gru.evaluation`: scored exactly as the daemon serves."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import edge_gru
from edge_gru.cli import main
from edge_gru.evaluation import evaluate_series, run_streams, score
from edge_gru.series import Series
from tests.trained_models import learnable_series, trained, write_csv


def _manual_scores(model: edge_gru.Model, s: Series) -> tuple[int, float, float, float]:
    """The reference: one pool.update per reading, forecasts compared with the next reading by hand."""
    pool = model.pool(max_streams=2)
    assert s.times is not None
    forecasts = [pool.update(["s"], [v], [t])[0] for v, t in zip(s.target_values, s.times, strict=True)]
    err, pers = [], []
    x = s.target_values
    for t in range(len(s) - 1):
        if np.isfinite(forecasts[t]) and np.isfinite(x[t + 1]) and s.times[t + 1] - s.times[t] <= 1.5 * s.period:
            err.append(forecasts[t] - x[t + 1])
            pers.append(x[t] - x[t + 1])
    e, p = np.array(err), np.array(pers)
    return len(e), float(np.mean(np.abs(e))), float(np.sqrt(np.mean(e**2))), float(np.mean(np.abs(p)))


def test_scores_match_a_reading_by_reading_reference_with_gaps() -> None:
    model = edge_gru.load(trained("stateful"), backend="numpy")
    base = learnable_series(n=400, seed=9)
    values = base.target_values.copy()
    values[[50, 51, 200]] = np.nan  # missing readings
    times = base.times.copy()  # type: ignore[union-attr]
    times[300:] += 3600.0  # a long gap: the pool resets the stream
    s = Series.from_arrays(values, times=times)
    n, mae, rmse, pmae = _manual_scores(model, s)
    scores = evaluate_series(model, s)
    assert scores.n == n
    assert scores.mae == pytest.approx(mae, rel=1e-12)
    assert scores.rmse == pytest.approx(rmse, rel=1e-12)
    assert scores.persistence_mae == pytest.approx(pmae, rel=1e-12)
    run = run_streams(model, {"s": s})["s"]
    assert run.resets[300] and run.resets.sum() == 1
    # after the gap reset the stream warms up again: no forecasts there
    warm = model.manifest.warmup
    assert np.isnan(run.forecasts[300 : 300 + warm - 1]).all()


def test_several_series_run_as_streams_of_one_pool() -> None:
    model = edge_gru.load(trained("causal"), backend="numba")
    a, b = learnable_series(n=300, seed=1), learnable_series(n=200, seed=2)
    b = Series.from_arrays(b.target_values * 100.0, times=b.times)
    together = run_streams(model, {"a": a, "b": b})
    alone = run_streams(model, {"b": b})
    np.testing.assert_array_equal(together["b"].forecasts, alone["b"].forecasts)
    assert score(b, together["b"]).mae == score(b, alone["b"]).mae


def test_seasonal_naive_is_scored_on_the_same_pairs() -> None:
    model = edge_gru.load(trained("window"), backend="numpy")
    s = learnable_series(n=300, seed=3)
    sc = evaluate_series(model, s, season=24)
    x = s.target_values
    rows = np.arange(24 - 1, len(s) - 1)
    rows = rows[rows >= model.manifest.warmup - 1]
    assert sc.n == rows.size
    assert sc.seasonal_mae == pytest.approx(float(np.mean(np.abs(x[rows + 1 - 24] - x[rows + 1]))))
    assert sc.persistence_mae == pytest.approx(float(np.mean(np.abs(x[rows] - x[rows + 1]))))


@pytest.mark.parametrize("backend", ["numba", "numpy", "tflite", "tflite-int8", "keras"])
def test_cli_evaluate_json(backend: str, tmp_path: Path) -> None:
    path = trained("stateful")
    s = learnable_series(n=300, seed=6)
    csv = write_csv(tmp_path / "data.csv", s, column="temp")
    result = CliRunner().invoke(
        main, ["evaluate", str(path), str(csv), "--column", "temp", "--backend", backend, "--json"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    for key in ("n", "mae", "rmse", "persistence_mae", "persistence_rmse", "ratio"):
        assert key in data
    reference = evaluate_series(edge_gru.load(path, backend="numpy"), s)
    assert data["n"] == reference.n
    assert data["persistence_mae"] == pytest.approx(reference.persistence_mae)
    tolerance = 0.05 if backend == "tflite-int8" else 1e-4
    assert data["mae"] == pytest.approx(reference.mae, rel=tolerance)
    assert data["mae"] < data["persistence_mae"]
    assert data["backend"] == backend


def test_cli_evaluate_table_and_errors(tmp_path: Path) -> None:
    path = trained("window")
    csv = write_csv(tmp_path / "data.csv", learnable_series(n=200), column="temp")
    ok = CliRunner().invoke(main, ["evaluate", str(path), str(csv), "--column", "temp", "--backend", "numpy"])
    assert ok.exit_code == 0, ok.output
    assert "persistence" in ok.output and "beats persistence" in ok.output
    bad = CliRunner().invoke(main, ["evaluate", str(path), str(csv), "--column", "humidity"])
    assert bad.exit_code == 1 and "no target column 'humidity'" in bad.output
    nobundle = CliRunner().invoke(main, ["evaluate", str(tmp_path), str(csv), "--column", "temp"])
    assert nobundle.exit_code == 1 and "manifest.json" in nobundle.output
