"""A device install lacks extras: every command that needs one says which, in one line, with exit status 2.

Each case runs ``edge-gru`` in a fresh interpreter whose import system refuses the extra's
modules, as on a device where they were never installed (a meta-path finder that raises
``ModuleNotFoundError`` for them, the exception a missing module raises).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import DATA, DEFAULT_MODEL, ROOT
from tests.pyrun import NOT_INSTALLED, run_cli_without

SST = str(DATA / "sst_neracoos_b01_30min.csv")


CASES = {
    "train": ("keras,tensorflow", "train", ["train", SST, "--column", "temperature", "--out", "{tmp}/new"]),
    "import-keras": ("keras,tensorflow", "train", ["import-keras", "{tmp}/model.keras", "--out", "{tmp}/new"]),
    "evaluate-keras": (
        "keras,tensorflow",
        "train",
        ["evaluate", str(DEFAULT_MODEL), SST, "--column", "temperature", "--backend", "keras"],
    ),
    "forecast-keras": (
        "keras,tensorflow",
        "train",
        ["forecast", str(DEFAULT_MODEL), SST, "--column", "temperature", "--backend", "keras", "--out", "{tmp}/new"],
    ),
    "evaluate-tflite": (
        "ai_edge_litert,tflite_runtime,tensorflow",
        "tflite",
        ["evaluate", str(DEFAULT_MODEL), SST, "--column", "temperature", "--backend", "tflite-int8"],
    ),
    "evaluate-numba": (
        "numba",
        "device",
        ["evaluate", str(DEFAULT_MODEL), SST, "--column", "temperature", "--backend", "numba"],
    ),
    "simulate-plot": ("matplotlib", "plot", ["simulate", "--plot", "{tmp}/sim.png", "--streams", "1"]),
    "simulate-tflite": (
        "ai_edge_litert,tflite_runtime,tensorflow",
        "tflite",
        ["simulate", "--backend", "tflite", "--streams", "1", "--duration", "1h", "-q"],
    ),
    "build-kernels": ("numba", "device", ["build-kernels", "--out", "{tmp}/new"]),
    "serve": ("paho", "device", ["serve", "--config", str(ROOT / "deploy" / "edge-gru.toml"), "--check"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_missing_extra_is_one_line_naming_it_with_exit_status_2(case: str, tmp_path: Path) -> None:
    blocked, extra, args = CASES[case]
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    # numba only: force the JIT, so that ahead-of-time kernels built on this machine are not used instead
    res = run_cli_without(blocked, *argv, env={"EDGE_GRU_KERNELS": "jit"})
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2, (res.returncode, res.stderr[-3000:])
    assert len(lines) == 1, res.stderr[-3000:]
    assert f"pip install 'edge-gru[{extra}]'" in lines[0]
    assert lines[0].startswith(f"edge-gru {argv[0]}: ")
    assert not (tmp_path / "new").exists() and not (tmp_path / "sim.png").exists()


def test_the_blocker_blocks_and_commands_run_without_it(tmp_path: Path) -> None:
    """The same command with nothing blocked gets past the extra check (here: to the evaluation itself)."""
    res = run_cli_without(
        "nothing", "evaluate", str(DEFAULT_MODEL), SST, "--column", "temperature", "--backend", "numpy"
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "one-step forecasts" in res.stdout
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            NOT_INSTALLED.replace("from edge_gru.cli import main", "import matplotlib"),
            "matplotlib",
        ],
        capture_output=True,
        text=True,
    )
    assert "ModuleNotFoundError" in probe.stderr
