"""The simulator in-process: reproducibility, fault accounting, the daemon's path equals the pool, scoring."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import edge_gru
from edge_gru.cli import main
from edge_gru.daemon.config import StreamsConfig
from edge_gru.errors import ConfigError, DataError
from edge_gru.pool import Status
from edge_gru.series import Series
from sim.clock import SimClock
from sim.config import SimConfig, parse_duration
from sim.faults import FATES, STREAM_FAULTS, inject, parse_faults
from sim.profiles import STANDARD_PROFILES, ReplaySource, Stream, build_streams
from sim.replay import load_column
from sim.run import build_run, simulate
from sim.scenario import load_scenario, named_scenarios
from sim.transport import InProcessTransport, PoolTransport
from tests.conftest import DEFAULT_MODEL

SIM_DATA = Path(__file__).resolve().parent.parent / "sim" / "data"


@pytest.fixture(scope="module")
def model() -> edge_gru.Model:
    return edge_gru.load(DEFAULT_MODEL, backend="numpy")


def _numbers(report_json: dict) -> dict:
    """Everything in the report that must not depend on the machine's speed."""
    return {k: v for k, v in report_json.items() if k != "timing"}


def test_same_seed_same_report_different_seed_different(model: edge_gru.Model) -> None:
    cfg = SimConfig(streams=6, duration_s=2 * 86400, seed=3, faults=parse_faults("all"))
    a = simulate(cfg, model=model).report.to_json()
    b = simulate(cfg, model=model).report.to_json()
    c = simulate(SimConfig(streams=6, duration_s=2 * 86400, seed=4, faults=parse_faults("all")), model=model)
    assert json.dumps(_numbers(a), sort_keys=True) == json.dumps(_numbers(b), sort_keys=True)
    cj = c.report.to_json()
    assert cj["total"]["mae_ratio"] != a["total"]["mae_ratio"]
    assert [p["persistence_mae"] for p in cj["profiles"]] != [p["persistence_mae"] for p in a["profiles"]]
    assert cj["faults"]["injected"] != a["faults"]["injected"]


def test_a_stream_does_not_depend_on_how_many_run_beside_it() -> None:
    few = build_streams(streams=2, profiles=STANDARD_PROFILES, samples=100, period_s=60.0, seed=9)
    many = build_streams(streams=12, profiles=STANDARD_PROFILES, samples=100, period_s=60.0, seed=9)
    np.testing.assert_array_equal(few[1].values, many[1].values)
    assert {s.profile for s in many} == set(STANDARD_PROFILES)
    assert all(np.isfinite(s.values).all() and s.values.shape == (100,) for s in many)


def test_profiles_have_their_shapes() -> None:
    day = 288  # 5-minute samples
    streams = {
        s.profile: s
        for s in build_streams(streams=6, profiles=STANDARD_PROFILES, samples=14 * day, period_s=300.0, seed=1)
    }
    daily = streams["daily"].values
    lag_day = np.corrcoef(daily[:-day], daily[day:])[0, 1]
    lag_half = np.corrcoef(daily[: -day // 2], daily[day // 2 :])[0, 1]
    assert lag_day > 0.9 > lag_half
    weekly = streams["weekly"]
    weekday = ((weekly.ts // 86400) + 3) % 7 < 5
    noon = ((weekly.ts % 86400) / 3600).astype(int) == 12
    assert weekly.values[weekday & noon].mean() > weekly.values[~weekday & noon].mean() + 5
    step = np.abs(np.diff(streams["step"].values))
    assert (step > 10).sum() >= 5  # abrupt level changes, not a smooth signal
    drift = streams["drift"].values
    days = drift[: 14 * day].reshape(14, day).mean(axis=1)
    assert abs(days[-1] - days[0]) > 0.2  # the daily means move


def test_each_fault_is_injected_and_counted(model: edge_gru.Model) -> None:
    rates = {name: 0.006 for name in STREAM_FAULTS}
    result = simulate(SimConfig(streams=6, duration_s=4 * 86400, seed=5, faults=parse_faults(rates)), model=model)
    report = result.report
    inj = report.injected
    assert all(inj[name] > 0 for name in STREAM_FAULTS), inj
    dropped = report.outcome.dropped
    assert dropped["not_finite"] == inj["nan"]
    assert sum(report.payload_drops.values()) == inj["garbage"]
    assert dropped["out_of_order"] == inj["out_of_order"]
    assert dropped["duplicate"] == inj["duplicate"]
    assert report.outcome.gap_resets == inj["gap"] + inj["clock_jump"]
    for c in report.fault_checks().values():
        if c["observed"] is not None:
            assert c["observed"] == c["injected"]
    # the accounting invariant of the daemon: every reading is published or dropped for one reason
    assert report.outcome.received == report.outcome.published + sum(dropped.values())
    assert report.unmatched_forecasts == 0
    assert report.accepted_consistent and report.accepted_observed == report.expected["accept"] > 1000


def test_fault_injection_changes_only_what_it_says() -> None:
    series = build_streams(streams=1, profiles=("sine",), samples=2000, period_s=60.0, seed=2)[0]
    out = inject(series, parse_faults("out_of_order=0.02"), np.random.default_rng(0))
    late = np.flatnonzero(out.fates == FATES.index("out_of_order"))
    assert late.size == out.injected["out_of_order"] > 0
    assert (out.ts[late] < out.ts[late - 1]).all()  # each arrives after a newer reading
    np.testing.assert_array_equal(np.sort(out.ts), series.ts)  # nothing lost, nothing invented
    drop = inject(series, parse_faults("dropout=0.02"), np.random.default_rng(0))
    assert drop.ts.size == series.ts.size - drop.injected["dropout"] and drop.injected["dropout"] > 0
    dup = inject(series, parse_faults("duplicate=0.02"), np.random.default_rng(0))
    assert dup.ts.size == series.ts.size + dup.injected["duplicate"] and dup.injected["duplicate"] > 0
    gaps = inject(series, parse_faults("gap=0.01"), np.random.default_rng(0))
    holes = np.diff(gaps.ts) / 60.0
    assert (holes > 3).sum() == gaps.injected["gap"] > 0 and holes.min() == 1.0
    stuck = inject(series, parse_faults("stuck=0.01"), np.random.default_rng(0))
    assert stuck.injected["stuck"] > 0 and (np.diff(stuck.values) == 0).sum() >= 5 * stuck.injected["stuck"]
    nan = inject(series, parse_faults("nan=0.02"), np.random.default_rng(0))
    assert np.isnan(nan.values).sum() == nan.injected["nan"] > 0
    clean = ~np.isnan(nan.values)
    np.testing.assert_array_equal(nan.values[clean], series.values[clean])


def test_the_daemons_path_gives_the_pools_forecasts(model: edge_gru.Model) -> None:
    """Payload bytes -> Worker.submit -> queue -> batches -> publish equals pool.update_detailed on the readings."""
    schedule = build_run(SimConfig(streams=5, duration_s=86400, seed=11, faults=parse_faults("all,nan=0.01")))
    worker = InProcessTransport(model, settings=StreamsConfig(batch_size=7)).run(schedule, SimClock())
    pool = PoolTransport(model).run(schedule, SimClock())
    assert worker.published == pool.published > 0
    a = np.lexsort((worker.ts, worker.stream))
    b = np.lexsort((pool.ts, pool.stream))
    np.testing.assert_array_equal(worker.stream[a], pool.stream[b])
    np.testing.assert_array_equal(worker.ts[a], pool.ts[b])
    np.testing.assert_allclose(worker.value[a], pool.value[b], rtol=1e-12)
    for reason in ("warmup", "not_finite", "out_of_order", "duplicate"):
        assert worker.dropped.get(reason, 0) == pool.dropped.get(reason, 0), reason


def test_scores_are_model_and_persistence_on_accepted_pairs(model: edge_gru.Model, tmp_path: Path) -> None:
    """Replay of a real column: the report equals a direct pool loop scored by hand (what evaluate computes)."""
    col = load_column(SIM_DATA / "taylor_electricity_30min.csv", "demand_MW", limit=600)
    result = simulate(
        SimConfig(streams=0, replays=(ReplaySource(path=str(col.path), column="demand_MW"),), duration_s=600 * 1800.0),
        model=model,
    )
    pool = model.pool(10)
    r = pool.update_detailed(["x"] * 1, col.values[:1], col.ts[:1])
    forecasts, statuses = [r.forecasts[0]], [r.status[0]]
    for i in range(1, col.values.size):
        r = pool.update_detailed(["x"], col.values[i : i + 1], col.ts[i : i + 1])
        forecasts.append(r.forecasts[0])
        statuses.append(r.status[0])
    f = np.array(forecasts[:-1])
    ok = np.array(statuses[:-1]) == Status.FORECAST
    actual = col.values[1:][ok]
    mae = np.mean(np.abs(f[ok] - actual))
    pmae = np.mean(np.abs(col.values[:-1][ok] - actual))
    rmse = math.sqrt(np.mean((f[ok] - actual) ** 2))
    total = result.report.to_json()["total"]
    assert total["n"] == ok.sum()
    assert total["mae"] == pytest.approx(mae, rel=1e-12)
    assert total["rmse"] == pytest.approx(rmse, rel=1e-12)
    assert total["persistence_mae"] == pytest.approx(pmae, rel=1e-12)
    assert total["mae_ratio"] == pytest.approx(mae / pmae, rel=1e-12)


def test_replay_skips_empty_cells_and_names_bad_input(tmp_path: Path) -> None:
    col = load_column(SIM_DATA / "beijing_pm25_2014_hourly.csv", "pm2.5")
    assert col.values.size == 8760 - 99 and np.isfinite(col.values).all()
    assert (np.diff(col.ts) > 0).all()
    with pytest.raises(DataError, match="no target column 'pm25'"):
        load_column(SIM_DATA / "beijing_pm25_2014_hourly.csv", "pm25")
    bad = tmp_path / "bad.csv"
    bad.write_text("time,v\n2026-01-01T00:00:00Z,1\n2026-01-01T00:01:00Z,warm\n")
    with pytest.raises(DataError, match=r"bad.csv: line 3, column 'v': 'warm' is not a number"):
        load_column(bad, "v")


def test_virtual_clock_never_sleeps_and_speed_paces() -> None:
    slept: list[float] = []
    now = [100.0]
    clock = SimClock(speed=60.0, monotonic=lambda: now[0], sleep=slept.append)
    clock.start()
    clock.wait_until(600.0)  # 10 simulated minutes at 60x = 10 s of wall time
    assert slept == [pytest.approx(10.0)]
    virtual = SimClock(speed=None, monotonic=lambda: 0.0, sleep=slept.append)
    virtual.wait_until(1e9)
    assert len(slept) == 1
    with pytest.raises(ConfigError):
        SimClock(speed=0)


def test_fault_spec_errors_name_the_fault() -> None:
    with pytest.raises(ConfigError, match="unknown fault 'nans'"):
        parse_faults("nans=0.1")
    with pytest.raises(ConfigError, match="nan rate must be between 0 and 1"):
        parse_faults("nan=2")
    with pytest.raises(ConfigError, match="broker_restart and daemon_restart need --spawn-broker"):
        SimConfig(faults=parse_faults("broker_restart=1"))
    assert parse_faults("all,nan=0.05").rates["nan"] == 0.05
    assert parse_duration("36h") == 129600.0


def test_scenarios_load_and_errors_name_the_key(tmp_path: Path) -> None:
    names = named_scenarios()
    assert {"default", "electricity", "sea-temperature", "beijing-air", "flaky-network"} <= set(names)
    for name in names:
        kwargs = load_scenario(name)
        SimConfig(**kwargs)
        for replay in kwargs.get("replays", ()):
            assert Path(replay.path).is_file() and Path(replay.path).is_relative_to(SIM_DATA)
    bad = tmp_path / "bad.toml"
    bad.write_text('streams = 3\nduraton = "1d"\n')
    with pytest.raises(ConfigError, match=r"bad.toml: unknown key 'duraton'"):
        load_scenario(bad)
    bad.write_text('streams = "three"\n')
    with pytest.raises(ConfigError, match=r"bad.toml: key 'streams' has the wrong type"):
        load_scenario(bad)
    bad.write_text('[[replay]]\nfile = "x.csv"\n')
    with pytest.raises(ConfigError, match=r"replay\[0\]: key 'column' is missing"):
        load_scenario(bad)
    bad.write_text('faults = "nan=7"\n')
    with pytest.raises(ConfigError, match=r"bad.toml: key faults: nan rate"):
        load_scenario(bad)


def test_saved_scenario_reproduces_the_command_line(model: edge_gru.Model, tmp_path: Path) -> None:
    scen = tmp_path / "mine.toml"
    scen.write_text(
        'streams = 3\nprofiles = ["sine", "step"]\nduration = "1d"\nperiod = "10m"\nseed = 4\nfaults = "nan=0.01"\n'
    )
    from_file = simulate(SimConfig(**load_scenario(scen)), model=model).report.to_json()
    direct = simulate(
        SimConfig(
            streams=3,
            profiles=("sine", "step"),
            duration_s=86400,
            period_s=600,
            seed=4,
            faults=parse_faults("nan=0.01"),
        ),
        model=model,
    ).report.to_json()
    assert _numbers(from_file) | {"scenario": None} == _numbers(direct) | {"scenario": None}


def test_cli_json_and_plot(tmp_path: Path) -> None:
    png = tmp_path / "sim.png"
    res = CliRunner().invoke(
        main,
        [
            "simulate",
            "--streams",
            "4",
            "--duration",
            "1d",
            "--faults",
            "nan=0.01",
            "--json",
            "--plot",
            str(png),
            "--backend",
            "numpy",
            "--model",
            str(DEFAULT_MODEL),
            "-q",
        ],
    )
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["stream_count"] == len(doc["streams"]) == 4 and doc["transport"] == "in-process"
    assert {p["profile"] for p in doc["profiles"]} == {"sine", "random_walk", "daily", "weekly"}
    assert doc["faults"]["injected"]["nan"] == doc["dropped"]["not_finite"]
    assert doc["timing"]["latency"]["p50_ms"] is not None
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000


def test_cli_table_and_errors(tmp_path: Path) -> None:
    res = CliRunner().invoke(
        main,
        ["simulate", "--streams", "2", "--duration", "12h", "--backend", "numpy", "--model", str(DEFAULT_MODEL), "-q"],
    )
    assert res.exit_code == 0, res.output
    assert "persist MAE" in res.output and "throughput" in res.output and "sine" in res.output
    one = CliRunner().invoke(
        main,
        ["simulate", "--streams", "2", "--profile", "daily", "--duration", "1d", "--json", "-q", "--backend", "numpy"],
    )
    total = json.loads(one.output)["total"]
    assert total["mae"] is not None and total["mae"] / total["persistence_mae"] == pytest.approx(
        json.loads(one.output)["profiles"][0]["mae_ratio"]
    )
    res = CliRunner().invoke(main, ["simulate", "--faults", "bogus=1"])
    assert res.exit_code != 0 and "unknown fault 'bogus'" in res.output
    res = CliRunner().invoke(main, ["simulate", "--replay", "nope.csv", "--column", "x", "--model", str(DEFAULT_MODEL)])
    assert res.exit_code != 0 and "nope.csv: no such file" in res.output
    res = CliRunner().invoke(main, ["simulate", "--list-scenarios"])
    assert res.exit_code == 0 and "electricity" in res.output


def test_a_stream_is_a_series_with_an_id_and_a_profile() -> None:
    s = Stream.regular("a", "sine", np.arange(3.0), np.ones(3), 1.0)
    assert isinstance(s.series, Series) and s.values.sum() == 3.0 and s.period == 1.0
    assert s.series.segments == ((0, 3),)


def test_replay_matches_edge_gru_evaluate(tmp_path: Path) -> None:
    """A replayed real CSV (with empty cells) scores exactly as ``edge-gru evaluate`` scores it."""
    lines = (SIM_DATA / "beijing_pm25_2014_hourly.csv").read_text().splitlines()[:2500]
    csv = tmp_path / "pm25.csv"
    csv.write_text("\n".join(lines) + "\n")
    assert sum(1 for line in lines[1:] if line.split(",")[1] == "") > 10  # gaps in the column
    common = ["--model", str(DEFAULT_MODEL), "--backend", "numpy"]
    sim = CliRunner().invoke(main, ["simulate", "--replay", str(csv), "--column", "pm2.5", "--json", "-q", *common])
    assert sim.exit_code == 0, sim.output
    ev = CliRunner().invoke(
        main, ["evaluate", str(DEFAULT_MODEL), str(csv), "--column", "pm2.5", "--json", "--backend", "numpy"]
    )
    assert ev.exit_code == 0, ev.output
    got, want = json.loads(sim.output)["total"], json.loads(ev.output.strip().splitlines()[-1])
    assert got["n"] == want["n"] > 2000
    for key in ("mae", "rmse", "persistence_mae", "persistence_rmse"):
        assert got[key] == pytest.approx(want[key], rel=1e-9), key


def test_speed_paces_the_run_against_the_wall_clock(model: edge_gru.Model) -> None:
    """Ten one-minute readings at 600x: the last is sent 0.9 s after the first, not at once."""
    paced = simulate(SimConfig(streams=2, duration_s=600, period_s=60, speed=600.0), model=model)
    assert paced.report.outcome.wall_s >= 0.85
    fast = simulate(SimConfig(streams=2, duration_s=600, period_s=60), model=model)
    assert _numbers(paced.report.to_json()) | {"clock": None} == _numbers(fast.report.to_json()) | {"clock": None}


def test_default_command_path_with_the_default_backend(tmp_path: Path) -> None:
    """What the README's first command runs (backend auto: numba when installed), shortened to six hours."""
    res = CliRunner().invoke(main, ["simulate", "--duration", "6h", "--json", "-q"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["stream_count"] == 12 and {p["profile"] for p in doc["profiles"]} == set(STANDARD_PROFILES)
    assert doc["readings"] == doc["received"] == 12 * 72
    assert doc["published"] + doc["dropped"]["warmup"] == doc["received"]
    assert doc["backend"] in ("numba", "numpy")
    reference = edge_gru.load(DEFAULT_MODEL, backend="numpy")
    local = simulate(SimConfig(duration_s=6 * 3600), model=reference).report.to_json()
    for a, b in zip(doc["streams"], local["streams"], strict=True):
        assert a["n"] == b["n"] and a["mae"] == pytest.approx(b["mae"], rel=1e-5)  # numba == numpy reference


def test_replay_options_must_pair_up() -> None:
    res = CliRunner().invoke(
        main, ["simulate", "--replay", "a.csv", "--replay", "b.csv", "--column", "x", "--column", "y", "--column", "z"]
    )
    assert res.exit_code != 0 and "2 --replay files need one --column or 2 of them" in res.output
    res = CliRunner().invoke(main, ["simulate", "--column", "x"])
    assert res.exit_code != 0 and "--replay FILE and --column NAME go together" in res.output


def test_each_profile_name_has_one_definition() -> None:
    """The simulator and the training script draw from the one profile module; no name means two things."""
    from edge_gru import profiles

    assert build_streams.__module__ == "sim.profiles"
    import sim.profiles as sim_profiles

    assert sim_profiles.GENERATORS is profiles.GENERATORS and sim_profiles.synthesize is profiles.synthesize
    assert not set(profiles.TRAINING_PROFILES) & set(profiles.STANDARD_PROFILES)
    stream = build_streams(streams=1, profiles=["daily"], samples=50, period_s=300.0, seed=5)[0]
    direct = profiles.synthesize(
        "daily", rng=np.random.default_rng([5, 0]), samples=50, period_s=300.0, start=profiles.START_TS
    )
    np.testing.assert_array_equal(stream.values, direct)
