"""``edge-gru train`` as a user runs it: it never writes over a directory unasked, and TensorFlow stays quiet.

The refusal tests run with TensorFlow made unimportable: the refusal must come before
anything loads it, let alone trains.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import edge_gru
from edge_gru.bundle import load_bundle
from tests.bundles import make_bundle
from tests.conftest import DATA, ROOT
from tests.pyrun import run_cli_without

NO_TF = "tensorflow,keras"
# Native TensorFlow/absl/LiteRT log lines ("I0000 00:00:1796354053.619339  4004 port.cc:153] ..."),
# the messages printed before absl is initialised, CUDA probing, the converter's settings.
TF_NOISE = re.compile(
    r"^[IWEF]\d{4} |absl|oneDNN|cuda|cuInit|XNNPACK|fully_quantize|tensorflow|TF_ENABLE|rebuild TensorFlow",
    re.IGNORECASE | re.MULTILINE,
)


def short_csv(tmp_path: Path, rows: int) -> Path:
    lines = (DATA / "sst_neracoos_b01_30min.csv").read_text().splitlines()[: rows + 1]
    path = tmp_path / "sst_short.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def train_args(csv: Path, out: Path, *extra: str) -> list[str]:
    return ["train", str(csv), "--column", "temperature", "--out", str(out), *extra]


def test_train_refuses_a_directory_holding_a_bundle(tmp_path: Path) -> None:
    old = make_bundle(tmp_path / "model")
    manifest = (old.path / "manifest.json").read_bytes()
    res = run_cli_without(NO_TF, *train_args(short_csv(tmp_path, 400), old.path))
    assert res.returncode == 2, res.stderr
    assert str(old.path) in res.stderr and "--force" in res.stderr and "bundle" in res.stderr
    assert "Traceback" not in res.stderr
    assert (old.path / "manifest.json").read_bytes() == manifest
    assert load_bundle(old.path).id == old.id


def test_train_refuses_a_directory_holding_other_files(tmp_path: Path) -> None:
    out = tmp_path / "notes"
    out.mkdir()
    (out / "todo.txt").write_text("keep me\n")
    res = run_cli_without(NO_TF, *train_args(short_csv(tmp_path, 400), out))
    assert res.returncode == 2 and str(out) in res.stderr and "--force" in res.stderr, res.stderr
    assert sorted(p.name for p in out.iterdir()) == ["todo.txt"]
    outfile = tmp_path / "a-file"
    outfile.write_text("x")
    res = run_cli_without(NO_TF, *train_args(short_csv(tmp_path, 400), outfile))
    assert res.returncode == 2 and str(outfile) in res.stderr and "is a file" in res.stderr, res.stderr


@pytest.mark.parametrize("case", ["empty directory", "--force"])
def test_train_goes_on_into_an_empty_directory_or_with_force(tmp_path: Path, case: str) -> None:
    """Past the check, the next thing train needs is TensorFlow: the only complaint is the missing extra."""
    out = tmp_path / "model"
    if case == "--force":
        make_bundle(out)
    else:
        out.mkdir()
    extra = ("--force",) if case == "--force" else ()
    res = run_cli_without(NO_TF, *train_args(short_csv(tmp_path, 400), out, *extra))
    assert res.returncode == 2, res.stderr
    assert "pip install 'edge-gru[train]'" in res.stderr and "--force" not in res.stderr


def _train(args: list[str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_", "ABSL"))}
    return subprocess.run(
        [sys.executable, "-m", "edge_gru.cli", *args],
        cwd=ROOT,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=lambda: os.umask(0o022),
    )


def test_train_keeps_tensorflow_logs_off_stderr(tmp_path: Path) -> None:
    """A real, small training run of a stacked network with a 3-step head (int8 conversion included), with --force."""
    pytest.importorskip("tensorflow")
    from edge_gru.layers import DenseLayer, GRULayer, Network

    out = tmp_path / "model"
    old = make_bundle(out)
    net = ["--layers", "8,4", "--dense", "4", "--horizon", "3"]
    res = _train(train_args(short_csv(tmp_path, 400), out, "--force", *net, "--epochs", "2", "--seed", "1"))
    assert res.returncode == 0, res.stderr[-4000:]
    assert not TF_NOISE.search(res.stderr), res.stderr[-4000:]
    assert "epoch    1/2" in res.stdout and "wrote" in res.stdout
    assert "GRU(8) > GRU(4) > Dense(4, relu) > Dense(3)" in res.stdout
    bundle = load_bundle(out)
    assert bundle.id != old.id
    assert bundle.manifest.network == Network(1, (GRULayer(8), GRULayer(4), DenseLayer(4, "relu"), DenseLayer(3)))
    found = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()}
    assert found == dict.fromkeys([*bundle.manifest.files, "manifest.json"], 0o644)
    # The bundle serves: a sanity check that quieting TensorFlow changed nothing it wrote.
    y = edge_gru.load(out, backend="numpy").predict([[5.0] * 10])
    assert y.shape == (1, 3) and np.all(np.abs(y - 5.0) < 5.0)


def test_train_verbose_and_failures_show_what_tensorflow_said(tmp_path: Path) -> None:
    """--verbose lets TensorFlow's lines through; a bad input fails in edge-gru's words only, either way."""
    pytest.importorskip("tensorflow")
    tiny = short_csv(tmp_path, 20)  # too short to train: refused after TensorFlow has loaded
    quiet = _train(train_args(tiny, tmp_path / "a"))
    loud = _train(train_args(tiny, tmp_path / "b", "--verbose"))
    for res in (quiet, loud):
        assert res.returncode == 1 and "fewer than the" in res.stderr, res.stderr[-4000:]
    assert not TF_NOISE.search(quiet.stderr), quiet.stderr
    assert TF_NOISE.search(loud.stderr), loud.stderr
