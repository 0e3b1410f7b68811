"""``edge-gru evaluate`` and :mod:`edge_gru.evaluation`: scored exactly as the daemon serves."""

from __future__ import annotations

import csv as csv_module
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import edge_gru
from edge_gru.cli import main
from edge_gru.daemon.payload import STATUS_REASONS
from edge_gru.evaluation import evaluate_series, run_streams, score
from edge_gru.pool import Status
from edge_gru.series import Series, read_series
from sim.clock import SimClock
from sim.faults import Emitted
from sim.profiles import Stream
from sim.schedule import build_schedule
from sim.transport import InProcessTransport
from tests.conftest import DEFAULT_MODEL
from tests.trained_models import learnable_series, trained, write_csv

DATA = Path(__file__).parent / "data"


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


def test_evaluate_explains_zero_forecasts_and_exits_non_zero(tmp_path: Path) -> None:
    """A bundle whose sample period does not fit the data: every reading is a gap reset, nothing to score."""
    path = trained("window")  # warms up for a full window: a reset stream never gets there
    assert edge_gru.load(path, backend="numpy").manifest.sample_period_s == 60.0
    base = learnable_series(n=200, seed=4)
    slow = Series.from_arrays(base.target_values, times=1_700_000_000.0 + 600.0 * np.arange(200))
    csv = write_csv(tmp_path / "slow.csv", slow, column="temp")
    res = CliRunner().invoke(main, ["evaluate", str(path), str(csv), "--column", "temp", "--backend", "numpy"])
    assert res.exit_code == 1, res.output
    assert "no one-step forecast to score" in res.output and "199 gap resets" in res.output
    assert "sample period is 60 s" in res.output and "median step is 600 s" in res.output
    # too short for the warm-up: also a refusal that says so
    short = write_csv(tmp_path / "short.csv", learnable_series(n=5), column="temp")
    res = CliRunner().invoke(main, ["evaluate", str(DEFAULT_MODEL), str(short), "--column", "temp", "--json"])
    assert res.exit_code == 1 and "5 were warm-up readings" in res.output


def _unordered_rows() -> list[tuple[float, float]]:
    """600 half-hourly readings of real demand with two duplicates and one out-of-order reading mixed in."""
    s = read_series(DATA / "taylor_electricity_30min.csv", column="demand_MW").slice(0, 600)
    assert s.times is not None
    rows = list(zip(s.times.tolist(), s.target_values.tolist(), strict=True))
    rows.insert(101, (rows[100][0], rows[100][1] + 500.0))  # duplicate timestamp, other value
    rows.insert(250, (rows[200][0], 30_000.0))  # out of order
    rows.insert(400, rows[399])  # an exact repeat
    return rows


def test_unordered_csv_gives_the_same_forecasts_through_evaluate_replay_forecast_and_the_daemon(
    tmp_path: Path,
) -> None:
    rows = _unordered_rows()
    csv = tmp_path / "unordered.csv"
    csv.write_text("time,demand\n" + "".join(f"{t!r},{v!r}\n" for t, v in rows))
    model = edge_gru.load(DEFAULT_MODEL, backend="numpy")
    # the reference: the pool fed every row of the file, one reading at a time
    pool = model.pool(max_streams=1)
    ref = [pool.update_detailed(["s"], [v], [t], now=0.0) for t, v in rows]
    status = [STATUS_REASONS.get(Status(int(r.status[0])), "forecast") for r in ref]
    assert status.count("duplicate") == 2 and status.count("out_of_order") == 1

    # edge-gru forecast: one row per file row, the pool's status and its exact forecast
    out = tmp_path / "forecasts.csv"
    res = CliRunner().invoke(
        main, ["forecast", str(DEFAULT_MODEL), str(csv), "--column", "demand", "--out", str(out), "--backend", "numpy"]
    )
    assert res.exit_code == 0, res.output
    assert "2 duplicate, 1 out_of_order" in res.output
    with out.open() as fh:
        got = list(csv_module.DictReader(fh))
    assert len(got) == len(rows)
    assert [g["status"] for g in got] == status
    for g, r, (t, v) in zip(got, ref, rows, strict=True):
        assert float(g["timestamp"]) == t and float(g["value"]) == v
        if g["status"] == "forecast":
            assert float(g["forecast"]) == r.forecasts[0] and float(g["forecast_ts"]) == r.forecast_ts[0]
            # the default bundle's adaptation publishes an interval once a stream has residuals to size it
            lo, hi = r.lower[0], r.upper[0]
            assert (g["lower"], g["upper"]) == (("", "") if np.isnan(lo) else (repr(float(lo)), repr(float(hi))))
        else:
            assert g["forecast"] == "" and np.isnan(r.forecasts[0])

    # the daemon's path: payloads of every file row through the Worker (the simulator's in-process transport)
    stream = Stream("s", "replay:s", Series.from_arrays([v for _, v in rows][:2], times=[0.0, 1.0]))
    n = len(rows)
    emitted = Emitted(
        np.arange(n, dtype=np.float64),
        np.array([t for t, _ in rows]),
        np.array([v for _, v in rows]),
        np.zeros(n, np.int8),
        {},
        {},
    )
    outcome = InProcessTransport(model).run(build_schedule([stream], [emitted]), SimClock())
    made = [(t, r.forecasts[0]) for (t, _), r, st in zip(rows, ref, status, strict=True) if st == "forecast"]
    assert outcome.published == len(made) == status.count("forecast")
    assert outcome.ts.tolist() == [t for t, _ in made]
    np.testing.assert_array_equal(outcome.value, [f for _, f in made])
    assert outcome.dropped.get("duplicate") == 2 and outcome.dropped.get("out_of_order") == 1

    # evaluate and simulate --replay: the same pairs and the same scores
    common = ["--model", str(DEFAULT_MODEL), "--backend", "numpy"]
    ev = CliRunner().invoke(
        main, ["evaluate", str(DEFAULT_MODEL), str(csv), "--column", "demand", "--json", *common[2:]]
    )
    assert ev.exit_code == 0, ev.output
    want = json.loads(ev.stdout)
    assert want["dropped"] == {"duplicate": 2, "out_of_order": 1} and want["rows"] == n - 3
    sim = CliRunner().invoke(
        main,
        ["simulate", "--replay", str(csv), "--column", "demand", "--json", "-q", *common],
    )
    assert sim.exit_code == 0, sim.output
    doc = json.loads(sim.stdout)
    assert doc["replay_dropped"] == {"unordered-demand": {"duplicate": 2, "out_of_order": 1}}
    assert doc["published"] == outcome.published
    for key in ("n", "mae", "rmse", "persistence_mae", "persistence_rmse"):
        assert doc["total"][key] == want[key], key
    strict = CliRunner().invoke(main, ["evaluate", str(DEFAULT_MODEL), str(csv), "--column", "demand", "--strict"])
    assert strict.exit_code == 1 and "line 103" in strict.output and "does not increase" in strict.output


def test_one_pairing_rule_for_evaluate_and_the_simulator() -> None:
    """The next accepted reading, at most 1.5 periods later: checked against a loop written out by hand."""
    from edge_gru.scoring import PAIR_GAP, next_reading_pairs

    rng = np.random.default_rng(2)
    ts = np.cumsum(rng.choice([60.0, 60.0, 60.0, 90.0, 91.0, 200.0], size=300))
    has = rng.random(300) < 0.8
    want = [k for k in range(299) if has[k] and ts[k + 1] - ts[k] <= 90.0]
    assert PAIR_GAP == 1.5
    assert next_reading_pairs(ts, has, 60.0).tolist() == want


def test_each_horizon_step_is_scored_against_its_own_later_reading(tmp_path: Path) -> None:
    """A Dense(3) stack: step k of the forecast at row t is scored against row t + k, persistence on the same pairs."""
    from edge_gru.layers import DenseLayer, GRULayer, Network
    from tests.bundles import make_bundle

    b = make_bundle(tmp_path / "b", network=Network(1, (GRULayer(6), GRULayer(4), DenseLayer(3))), warmup=2)
    model = edge_gru.load(b.path, "numpy")
    values = 10 + 2 * np.sin(np.arange(120) / 6.0)
    series = Series("s.csv", ("value",), values[:, None], 1000.0 + 60 * np.arange(120), 60.0, ((0, 120),))
    scores = evaluate_series(model, series)
    pool = model.pool(2)
    steps = np.concatenate([pool.update_detailed(["s"], values[t : t + 1]).values for t in range(120)])  # type: ignore[misc]
    horizon = scores.extra["horizon"]
    assert [h["step"] for h in horizon] == [1, 2, 3]
    for h in horizon:
        k = h["step"]
        rows = np.arange(1, 120 - k)  # forecasts from row 1 (warm-up 2), each with its actual k rows later
        assert h["n"] == rows.size
        assert h["mae"] == pytest.approx(np.mean(np.abs(steps[rows, k - 1] - values[rows + k])), rel=1e-12)
        assert h["persistence_mae"] == pytest.approx(np.mean(np.abs(values[rows] - values[rows + k])), rel=1e-12)
    assert horizon[0]["mae"] == pytest.approx(scores.mae, rel=1e-12)
    out = tmp_path / "s.csv"
    out.write_text("ts,value\n" + "".join(f"{1000 + 60 * t},{v:.12g}\n" for t, v in enumerate(values)))
    result = CliRunner().invoke(main, ["evaluate", str(b.path), str(out), "--column", "value", "--backend", "numpy"])
    assert result.exit_code == 0, result.output
    assert "step 3:" in result.output
