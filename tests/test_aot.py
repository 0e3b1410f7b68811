"""Ahead-of-time kernels: built by ``edge-gru build-kernels``, equal to the JIT, used without numba.

The module is built once per test session (about a minute on a loaded 2-core machine).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import edge_gru
from edge_gru import aot, harness
from edge_gru.cli import main
from edge_gru.harness import Broker
from edge_gru.kernel_layout import STATE_PER_UNIT, stack_scratch_size, stack_state_size, tile_scratch_size
from edge_gru.layers import DenseLayer, GRULayer, Network
from edge_gru.layers import random_weights as random_network
from tests.bundles import random_weights
from tests.conftest import DEFAULT_MODEL
from tests.pyrun import run_python

kernels = pytest.importorskip("edge_gru.kernels")
pytest.importorskip("numba.pycc")
pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def kernel_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("kernels")
    result = CliRunner().invoke(main, ["build-kernels", "--out", str(out), "--variant", "host", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{") :])
    assert report["dir"] == str(out) and len(report["modules"]) == 1
    assert all(err <= 1e-5 for err in report["max_abs_error_vs_reference"].values())
    # timed against the JIT on this CPU; with one variant built, that one is kept
    assert set(report["timings_ns"]) == {"host", "jit"} and all(t > 0 for t in report["timings_ns"].values())
    assert report["kept"] == "host" == aot.read_choice(out)
    return out


@pytest.fixture(scope="module")
def compiled(kernel_dir: Path) -> aot.CompiledKernels:
    found = aot.load_kernels([kernel_dir])
    assert found is not None and found.variant == "host"
    return found


@pytest.mark.parametrize(("units", "features", "reset_after"), [(50, 1, True), (50, 1, False), (13, 3, True)])
def test_aot_and_jit_kernels_agree(compiled: aot.CompiledKernels, units: int, features: int, reset_after: bool) -> None:
    rng = np.random.default_rng(units + features)
    p = random_weights(units, features, reset_after=reset_after, seed=1).packed()
    streams = 200
    x = rng.normal(0, 1.5, (streams, features)).astype(np.float32)
    h0 = rng.normal(0, 0.6, (streams + 2, units)).astype(np.float32)
    rows = rng.permutation(streams + 2)[:streams].astype(np.int64)
    rows[7] = rows[2]  # a repeated stream inside a tile
    scratch = np.zeros(tile_scratch_size(units, features), np.float32)
    out = {}
    for name, k in (("jit", kernels), ("aot", compiled)):
        h = h0.copy()
        y = np.zeros(streams, np.float32)
        k.gru_step_batch(p, x, h, rows, scratch, y, reset_after)
        state = np.zeros(STATE_PER_UNIT * units, np.float32)
        state[:units] = h0[0]
        y1 = np.array([k.gru_step(p, x[s], state, reset_after) for s in range(20)], np.float32)
        windows = rng.normal(0, 1, (70, 5, features)).astype(np.float32) if name == "jit" else out["jit"][4]
        yw = np.zeros(70, np.float32)
        k.gru_windows(p, windows, scratch, yw, reset_after)
        out[name] = (y, h, y1, state.copy(), windows, yw)
    for a, b in zip(out["jit"], out["aot"], strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)


def test_aot_and_jit_stack_kernels_agree(compiled: aot.CompiledKernels) -> None:
    net = Network(2, (GRULayer(12), GRULayer(7, reset_after=False), DenseLayer(5, "sigmoid"), DenseLayer(3)))
    w = random_network(net, seed=3)
    p, meta = w.packed(), w.meta()
    rng = np.random.default_rng(3)
    streams = 200
    x = rng.normal(0, 1.5, (streams, 2)).astype(np.float32)
    h0 = rng.normal(0, 0.6, (streams + 2, net.state_size)).astype(np.float32)
    rows = rng.permutation(streams + 2)[:streams].astype(np.int64)
    rows[7] = rows[2]
    windows = rng.normal(0, 1, (70, 5, 2)).astype(np.float32)
    out = {}
    for name, k in (("jit", kernels), ("aot", compiled)):
        h = h0.copy()
        y = np.zeros((streams, 3), np.float32)
        k.stack_step_batch(p, meta, x, h, rows, np.zeros(stack_scratch_size(net), np.float32), y)
        state = np.zeros(stack_state_size(net), np.float32)
        y1 = np.zeros((20, 3), np.float32)
        for s in range(20):
            k.stack_step(p, meta, x[s], state, y1[s])
        yw = np.zeros((70, 3), np.float32)
        k.stack_windows(p, meta, windows, np.zeros(stack_scratch_size(net), np.float32), yw)
        out[name] = (y, h, y1, state, yw)
    for a, b in zip(out["jit"], out["aot"], strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)


def test_load_uses_the_aot_kernels_without_importing_numba(kernel_dir: Path) -> None:
    result = run_python(
        """
        import json, sys
        import numpy as np
        import edge_gru
        model = edge_gru.load(sys.argv[1] if len(sys.argv) > 1 else "models/default", backend="numba")
        pool = model.pool(100)
        ids = [f"s{i}" for i in range(100)]
        out = []
        for t in range(30):
            values = 20 + np.sin(np.arange(100) + t / 5.0)
            out.append(pool.update(ids, values, [1e9 + 60 * t] * 100).tolist())
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("numba", "llvmlite"))
        print(json.dumps({"kind": model.backend.kernel_kind, "heavy": heavy, "y": out}))
        """,
        {"EDGE_GRU_KERNEL_DIR": str(kernel_dir), "EDGE_GRU_KERNELS": "auto"},
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["kind"] == "aot-host"
    assert report["heavy"] == []
    # the same readings through the numpy reference backend
    pool = edge_gru.load(DEFAULT_MODEL, backend="numpy").pool(100)
    ids = [f"s{i}" for i in range(100)]
    for t in range(30):
        values = 20 + np.sin(np.arange(100) + t / 5.0)
        expected = pool.update(ids, values, [1e9 + 60 * t] * 100)
        got = np.array(report["y"][t], dtype=float)
        assert np.array_equal(np.isnan(got), np.isnan(expected))
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_a_module_built_from_other_sources_is_not_used(kernel_dir: Path, tmp_path: Path) -> None:
    stale = tmp_path / "stale"
    shutil.copytree(kernel_dir, stale)
    for sidecar in stale.glob("*.json"):
        info = json.loads(sidecar.read_text())
        info["kernel_hash"] = "0" * 16
        sidecar.write_text(json.dumps(info))
    check = CliRunner().invoke(main, ["build-kernels", "--check", "--out", str(stale)])
    assert check.exit_code == 1
    assert "other kernel sources" in check.output
    assert aot.load_kernels([stale]) is None

    forced = run_python(
        """
        import edge_gru
        try:
            edge_gru.load("models/default", backend="numba")
        except edge_gru.BackendUnavailableError as exc:
            print("refused:", exc)
        """,
        {"EDGE_GRU_KERNEL_DIR": str(stale), "EDGE_GRU_KERNELS": "aot"},
    )
    assert forced.returncode == 0, forced.stderr
    assert forced.stdout.startswith("refused:") and "edge-gru build-kernels" in forced.stdout

    other_cpu = tmp_path / "other-cpu"
    shutil.copytree(kernel_dir, other_cpu)
    for sidecar in other_cpu.glob("*.json"):
        info = json.loads(sidecar.read_text())
        info["cpu"] = "another-cpu-model"  # a host build copied to a different board
        sidecar.write_text(json.dumps(info))
    assert aot.load_kernels([other_cpu]) is None
    check = CliRunner().invoke(main, ["build-kernels", "--check", "--out", str(other_cpu)])
    assert check.exit_code == 1 and "another CPU model" in check.output

    fallback = run_python(
        """
        import edge_gru
        print(edge_gru.load("models/default", backend="numba").backend.kernel_kind)
        """,
        {"EDGE_GRU_KERNEL_DIR": str(stale), "EDGE_GRU_KERNELS": "auto"},
    )
    assert fallback.returncode == 0, fallback.stderr
    assert fallback.stdout.strip() == "jit"
    assert "do not match" in fallback.stderr and "edge-gru build-kernels" in fallback.stderr


@pytest.mark.parametrize(
    ("timings", "kept"),
    [
        ({"host": 900.0, "generic": 1000.0, "jit": 800.0}, "host"),  # the JIT is only compared, never kept
        ({"host": 1200.0, "generic": 1000.0, "jit": 800.0}, "generic"),
        ({"host": 1000.0, "generic": 1000.0}, "host"),  # a tie goes to host
        ({"generic": 5.0, "jit": 1.0}, "generic"),
        ({"host": float("nan"), "generic": 7.0}, "generic"),  # a failed timing never wins
    ],
)
def test_the_fastest_timed_variant_is_kept(timings: dict[str, float], kept: str) -> None:
    assert aot.select_variant(timings) == kept


def test_nothing_timed_is_an_error() -> None:
    with pytest.raises(aot.KernelBuildError, match="no ahead-of-time variant"):
        aot.select_variant({"jit": 1.0})


def _with_fake_generic(kernel_dir: Path, tmp_path: Path) -> Path:
    """A copy of the built dir with the host module also filed as a generic build (same code, another file)."""
    both = tmp_path / "both"
    shutil.copytree(kernel_dir, both)
    (both / aot.CHOICE_FILE).unlink()
    host = json.loads((both / f"{aot.module_name('host')}.json").read_text())
    generic_file = f"{aot.module_name('generic')}{aot.extension_suffix()}"
    shutil.copy(both / host["file"], both / generic_file)
    (both / f"{aot.module_name('generic')}.json").write_text(
        json.dumps({**host, "variant": "generic", "file": generic_file, "cpu_name": "generic"})
    )
    return both


def test_the_loader_prefers_the_kept_variant(kernel_dir: Path, tmp_path: Path) -> None:
    both = _with_fake_generic(kernel_dir, tmp_path)
    loaded = aot.load_kernels([both])
    assert loaded is not None and loaded.variant == "host"  # no choice file: host first
    assert aot.write_choice(both, {"host": 2000.0, "generic": 1500.0, "jit": 1000.0}) == "generic"
    loaded = aot.load_kernels([both])
    assert loaded is not None and loaded.variant == "generic" and loaded.path.parent == both
    # a later build of host alone merges its new timing with generic's earlier one
    assert aot.write_choice(both, {"host": 1400.0}) == "host"
    assert json.loads((both / aot.CHOICE_FILE).read_text())["timings_ns"]["generic"] == 1500.0
    # a choice made on another CPU (the directory copied to another board) is ignored
    info = json.loads((both / aot.CHOICE_FILE).read_text())
    (both / aot.CHOICE_FILE).write_text(json.dumps({**info, "kept": "generic", "cpu": "another-cpu"}))
    assert aot.read_choice(both) is None
    # a kept variant whose module is gone: the loader takes what is there
    (both / aot.CHOICE_FILE).write_text(json.dumps({**info, "kept": "generic"}))
    (both / f"{aot.module_name('generic')}.json").unlink()
    loaded = aot.load_kernels([both])
    assert loaded is not None and loaded.variant == "host"


def test_the_jit_still_serves_when_the_kept_variant_cannot_load(kernel_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(kernel_dir, broken)
    for module in broken.glob(f"*{aot.extension_suffix()}"):
        module.write_bytes(b"not an extension module")
    result = run_python(
        """
        import edge_gru
        print(edge_gru.load("models/default", backend="numba").backend.kernel_kind)
        """,
        {"EDGE_GRU_KERNEL_DIR": str(broken), "EDGE_GRU_KERNELS": "auto"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "jit"
    assert "cannot import compiled kernels" in result.stderr


def _mapped_files(pid: int) -> set[str]:
    with open(f"/proc/{pid}/maps", encoding="utf-8") as fh:
        return {line.split()[-1] for line in fh if len(line.split()) >= 6}


def test_daemon_with_aot_kernels_loads_neither_numba_nor_llvmlite(
    kernel_dir: Path, broker: Broker, tmp_path: Path
) -> None:
    """The daemon serves 100 streams from the compiled module: no numba or llvmlite mapped, RSS under 64 MiB."""
    pytest.importorskip("paho.mqtt")
    prefix = f"aot{os.getpid()}"
    daemon = harness.Daemon(
        tmp_path,
        broker=broker,
        sections={
            "model": {"path": str(DEFAULT_MODEL), "backend": "numba"},
            "streams": {"input": [f"{prefix}/in/{{stream}}"], "output": f"{prefix}/out/{{stream}}"},
        },
        env={"EDGE_GRU_KERNEL_DIR": str(kernel_dir), "EDGE_GRU_KERNELS": "aot"},
    )
    watcher = harness.Watcher(broker.host, broker.port, [f"{prefix}/out/+"])
    publisher = harness.Publisher(broker.host, broker.port)
    try:
        daemon.start()
        daemon.wait_ready(120)
        messages = [
            (f"{prefix}/in/s{i}", json.dumps({"value": 20.0 + i + 0.1 * t, "ts": 1e9 + 60 * t}).encode())
            for t in range(15)
            for i in range(100)
        ]
        publisher.publish_all(messages)
        watcher.wait_for(lambda: len(watcher.on(f"{prefix}/out/+")) >= 100, 120, "forecasts from 100 streams")
        mapped = _mapped_files(daemon.pid)
        assert any(aot.MODULE_PREFIX in path for path in mapped), "the compiled kernel module is not loaded"
        heavy = sorted(path for path in mapped if "llvmlite" in path or "/numba/" in path)
        assert heavy == []
        assert daemon.rss_bytes() < 64 * 2**20, "the issue's memory bound for a daemon serving with AOT kernels"
        assert daemon.alive
    finally:
        publisher.close()
        watcher.close()
        daemon.stop()


def test_no_cxx_compiler_is_a_clear_error_and_leaves_nothing(tmp_path: Path) -> None:
    # numba.pycc refuses to build unless a C++ file compiles too: a Debian with gcc but no g++
    # (cc1plus missing) got a raw traceback and a stale .build-* directory in the kernel cache.
    cc = tmp_path / "gcc-without-cxx"
    cc.write_text('#!/bin/sh\ncase "$*" in *.cxx*) echo "cannot execute cc1plus" >&2; exit 1;; esac\nexec gcc "$@"\n')
    cc.chmod(0o755)
    out = tmp_path / "kernels"
    out.mkdir()
    env = {**os.environ, "CC": str(cc), "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run(
        [sys.executable, "-m", "edge_gru.cli", "build-kernels", "--out", str(out), "--variant", "generic"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode != 0
    assert "g++" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert list(out.iterdir()) == []
