"""``edge-gru export-c``: what it writes, what it prints, and how it refuses bad input."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from edge_gru.cli import main
from tests.bundles import make_bundle


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["export-c", *args])
    return result.exit_code, result.output


def test_export_c_writes_sources_and_prints_flash_and_ram(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "b", units=12, features=2, mode="stateful")
    code, out = run(str(bundle.path), "--out", str(tmp_path / "c"))
    assert code == 0, out
    assert bundle.id in out
    # weights + biases + the layer table (2 rows of 24 B) + fixed mean/std
    flash = 4 * (2 * 36 + 12 * 36 + 12) + 4 * (2 * 36 + 1) + 2 * 24 + 8 * 2 * 2
    match = re.search(r"flash\s+([\d,]+) B", out)
    assert match and int(match.group(1).replace(",", "")) == flash, out
    assert "RAM" in out and "state" in out and "stack scratch" in out
    names = {p.name for p in (tmp_path / "c").iterdir()}
    assert {
        "edge_gru_model.h",
        "edge_gru_model.c",
        "edge_gru_runtime.h",
        "edge_gru_runtime.c",
        "main.c",
        "Makefile",
    } <= names
    built = subprocess.run(["make", "-C", str(tmp_path / "c")], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr


def test_export_c_int8_and_prefix(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "b", units=8)
    code, out = run(str(bundle.path), "--out", str(tmp_path / "c"), "--int8", "--prefix", "boiler")
    assert code == 0, out
    assert "int8 weights" in out
    header = (tmp_path / "c" / "boiler_model.h").read_text()
    assert "#define BOILER_INT8 1" in header and "extern const int8_t boiler_matrices[" in header
    runtime = (tmp_path / "c" / "boiler_runtime.h").read_text()
    assert "float boiler_predict(boiler_state *s, const float *x_raw);" in runtime
    assert "edge_gru_" not in runtime and "EDGE_GRU_" not in runtime
    assert "./boiler_forecast" in out


@pytest.mark.parametrize(
    "damage, message",
    [
        ("missing", "manifest.json: missing"),
        ("checksum", "does not match manifest.json"),
        ("schema", "architecture.layers[0].units is -3"),
    ],
)
def test_export_c_refuses_a_bad_bundle_naming_the_file(damage: str, message: str, tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "b", units=4)
    manifest = bundle.path / "manifest.json"
    if damage == "missing":
        manifest.unlink()
    elif damage == "checksum":
        (bundle.path / "weights.npz").write_bytes(b"not the weights")
    else:
        data = json.loads(manifest.read_text())
        data["architecture"]["layers"][0]["units"] = -3
        manifest.write_text(json.dumps(data))
    code, out = run(str(bundle.path), "--out", str(tmp_path / "c"))
    assert code == 1
    assert message in out and "Traceback" not in out
    assert not (tmp_path / "c" / "edge_gru_model.c").exists()


def test_export_c_refuses_an_unusable_out_folder_or_prefix(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "b", units=4)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    cases = [
        (["--out", str(blocker)], "exists and is not a folder"),
        (["--out", str(blocker / "sub")], "cannot create the output folder"),
        (["--out", str(bundle.path)], "is the bundle folder itself"),
        (["--out", str(tmp_path / "c"), "--prefix", "9lives"], "prefix '9lives' is not usable"),
        (["--out", str(tmp_path / "c"), "--prefix", "a-b"], "must be a C identifier"),
    ]
    for args, message in cases:
        code, out = run(str(bundle.path), *args)
        assert code == 1 and message in out, (args, out)
        assert "Traceback" not in out
    assert not (tmp_path / "c").exists()


def test_export_c_imports_neither_numba_nor_tensorflow() -> None:
    code = (
        "import sys, edge_gru.cli.export_c, firmware_export, firmware_export.export; "
        "print(sorted(m for m in ('numba', 'tensorflow') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert done.stdout.strip() == "[]", done.stderr
