"""``edge-gru bench``: the report's structure, honest "unavailable" rows, and fresh-process figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from edge_gru import bench as benchmarking
from edge_gru.cli import main
from tests.bundles import make_bundle

pytestmark = pytest.mark.timeout(600)


@pytest.fixture
def small_bundle(tmp_path: Path) -> Path:
    make_bundle(tmp_path / "bundle", units=8, features=1, mode="stateful", warmup=2)
    return tmp_path / "bundle"


def test_bench_json_reports_every_backend_and_the_machine(
    small_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "no-kernels"
    empty.mkdir()
    monkeypatch.setenv("EDGE_GRU_KERNEL_DIR", str(empty))
    args = ["bench", "--json", "--model", str(small_bundle)]
    args += ["--backend", "numpy", "--backend", "numba-aot", "--backend", "tflite"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    machine = report["machine"]
    assert machine["cores"] >= 1 and machine["python"] and machine["versions"]["numpy"]
    assert report["bundle"]["network"] == "GRU(8) > Dense(1)" and report["bundle"]["state_size"] == 8
    rows = {r["backend"]: r for r in report["results"]}
    assert list(rows) == ["numpy", "numba-aot", "tflite"]

    numpy_row = rows["numpy"]
    assert numpy_row["available"]
    assert numpy_row["single_ns"] > 0 and numpy_row["pool_single_ns"] > numpy_row["single_ns"] / 10
    assert sorted(int(s) for s in numpy_row["batched"]) == [1, 64, 1024, 10_000]
    assert all(v > 0 for v in numpy_row["batched"].values())
    # the fresh process: import, first forecast, RSS (numpy and the interpreter alone are well under 1 GiB)
    assert numpy_row["import_ms"] > 0 and numpy_row["first_step_warm_ms"] > 0
    assert 5 < numpy_row["rss_after_load_mib"] < 1024
    assert numpy_row["rss_serving_mib"] >= numpy_row["rss_after_load_mib"] * 0.9

    assert not rows["numba-aot"]["available"] and "build-kernels" in rows["numba-aot"]["note"]
    assert not rows["tflite"]["available"]
    assert "step_f32.tflite" in rows["tflite"]["note"] or "not installed" in rows["tflite"]["note"]


def test_bench_table_names_unavailable_backends(small_bundle: Path) -> None:
    report = benchmarking.run(small_bundle, ["numpy", "tflite-int8"], processes=False)
    table = benchmarking.format_table(report)
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["backend", "step", "ns"]
    assert any(line.startswith("numpy") for line in lines)
    assert any(line.startswith("tflite-int8") and "unavailable" in line for line in lines)
    assert "machine:" in table and "clock: cpu" in table
    # the legend explains every column of the header
    legend = table[table.index("columns:") :]
    for column in ("step ns", "pool ns", "S=N M/s", "pool S=N M/s", "import ms", "1st cold ms", "1st warm ms"):
        assert f"\n  {column} " in legend, column
    assert "RSS load MiB" in legend and "RSS N str MiB" in legend
    assert "columns:" not in benchmarking.format_table(report, legend=False)


def test_bench_rows_come_from_the_backend_registry() -> None:
    from edge_gru.backends import BACKENDS

    served = {name for name, _ in benchmarking.ROWS.values()}
    assert served == {*BACKENDS, "keras"}
    assert [r for r, (name, _) in benchmarking.ROWS.items() if name == "numba"] == ["numba-jit", "numba-aot"]


def test_best_ns_measures_the_call() -> None:
    """A call that sleeps 1 ms measures about 1 ms on the wall clock and almost nothing on the CPU clock."""
    import time

    benchmarking.set_clock("wall")
    try:
        wall = benchmarking.best_ns(lambda: time.sleep(0.001), burst_s=0.003, repeats=3)
    finally:
        benchmarking.set_clock("cpu")
    cpu = benchmarking.best_ns(lambda: time.sleep(0.001), burst_s=0.003, repeats=3)
    assert 0.9e6 < wall < 20e6
    assert cpu < 0.5e6


def test_bench_runs_a_stack_beside_the_default_bundle_in_one_run(tmp_path: Path) -> None:
    """Two bundles, numba and LiteRT on each: one report per bundle, every figure measured."""
    from edge_gru.bundle import STEP_F32
    from edge_gru.harness import DEFAULT_MODEL
    from edge_gru.layers import DenseLayer, GRULayer, Network, random_weights
    from edge_gru.train.tflite_export import convert_float

    weights = random_weights(Network(1, (GRULayer(12), GRULayer(6), DenseLayer(1))), seed=2)
    make_bundle(tmp_path / "stack", weights=weights, warmup=2, extra_files={STEP_F32: convert_float(weights)})
    args = ["bench", "--json", "--no-processes", "--model", str(DEFAULT_MODEL), "--model", str(tmp_path / "stack")]
    result = CliRunner().invoke(main, [*args, "--backend", "numba-jit", "--backend", "tflite"])
    assert result.exit_code == 0, result.output
    reports = json.loads(result.output)
    assert [r["bundle"]["network"] for r in reports] == ["GRU(50) > Dense(1)", "GRU(12) > GRU(6) > Dense(1)"]
    for report in reports:
        rows = {r["backend"]: r for r in report["results"]}
        assert set(rows) == {"numba-jit", "tflite"}
        for row in rows.values():
            assert row["available"] and row["single_ns"] > 0 and all(v > 0 for v in row["batched"].values())
    table = CliRunner().invoke(main, ["bench", *args[2:], "--backend", "numba-jit", "--no-legend"])
    assert table.exit_code == 0 and table.output.count("bundle: ") == 2 and "GRU(12) > GRU(6)" in table.output
