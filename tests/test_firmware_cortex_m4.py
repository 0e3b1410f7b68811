"""Cross-compile the exported runtime and model for a Cortex-M4F with arm-none-eabi-gcc (Debian package
``gcc-arm-none-eabi``): strict C99 builds, no .data/.bss, and the flash the report promises.

Skipped where the cross compiler is not installed (it is not a Python dependency); the host
tests in test_firmware_export.py cover the behaviour.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

import firmware_export
from edge_gru.layers import DenseLayer, GRULayer, Network
from tests.bundles import make_bundle
from tests.test_firmware_export import CAUSAL

GCC = shutil.which("arm-none-eabi-gcc") or ""
SIZE = shutil.which("arm-none-eabi-size") or ""
NM = shutil.which("arm-none-eabi-nm") or ""
M4 = ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"]
STRICT = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O2"]

pytestmark = pytest.mark.skipif(
    not (GCC and SIZE and NM), reason="arm-none-eabi-gcc not installed (apt-get install gcc-arm-none-eabi)"
)


def sections(obj: Path) -> dict[str, int]:
    out = subprocess.run([SIZE, "-A", str(obj)], capture_output=True, text=True, check=True).stdout
    sizes = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].startswith(".") and parts[1].isdigit():
            sizes[parts[0]] = int(parts[1])
    return sizes


def compile_m4(src: Path, *flags: str) -> Path:
    obj = src.with_suffix(".o")
    done = subprocess.run(
        [GCC, *STRICT, *M4, *flags, "-c", str(src), "-o", str(obj)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    return obj


NETWORKS = {
    "GRU(50)": Network(1, (GRULayer(50), DenseLayer(1))),
    "GRU(32)>GRU(16,before)>Dense(8,relu)>Dense(4)": Network(
        1, (GRULayer(32), GRULayer(16, reset_after=False), DenseLayer(8, "relu"), DenseLayer(4))
    ),
}


@pytest.mark.parametrize("int8", [False, True], ids=["float32", "int8"])
@pytest.mark.parametrize("mode", ["stateful", "window"])
@pytest.mark.parametrize("name", list(NETWORKS))
def test_cortex_m4_objects_have_the_reported_flash_and_no_ram_globals(
    name: str, mode: str, int8: bool, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = make_bundle(tmp_path / "b", network=NETWORKS[name], window=10, mode=mode, normalization=CAUSAL)
    report = firmware_export.export(bundle.path, tmp_path / "c", int8=int8)
    model = sections(compile_m4(tmp_path / "c" / "edge_gru_model.c"))
    runtime = sections(compile_m4(tmp_path / "c" / "edge_gru_runtime.c"))
    # The model is read-only data only; its size is the report's flash figure (plus alignment padding).
    assert model.get(".text", 0) == 0 and model.get(".data", 0) == 0 and model.get(".bss", 0) == 0
    assert report.flash_bytes <= model[".rodata"] <= report.flash_bytes + 16
    # The runtime keeps nothing in RAM between calls: every byte of state is the caller's struct.
    assert runtime.get(".data", 0) == 0 and runtime.get(".bss", 0) == 0
    assert 0 < runtime[".text"] < 4096
    with capsys.disabled():
        print(
            f"\ncortex-m4 {name} {mode} {'int8' if int8 else 'float32'}: runtime .text {runtime['.text']} B, "
            f"model .rodata {model['.rodata']} B, report flash {report.flash_bytes} B, RAM {report.ram_bytes} B"
        )


def test_float_statistics_build_uses_no_double_arithmetic_in_the_sample_path(tmp_path: Path) -> None:
    """With -DEDGE_GRU_STATS_DOUBLE=0 no float is silently promoted to double (soft-float on an M4F)."""
    bundle = make_bundle(tmp_path / "b", units=16, features=3, mode="stateful", normalization=CAUSAL)
    firmware_export.export(bundle.path, tmp_path / "c")
    obj = compile_m4(tmp_path / "c" / "edge_gru_runtime.c", "-DEDGE_GRU_STATS_DOUBLE=0", "-Wdouble-promotion")
    undefined = subprocess.run([NM, "-u", str(obj)], capture_output=True, text=True, check=True).stdout
    # Only the timestamp path (edge_gru_predict_ts) compares and subtracts doubles; no double division,
    # addition or sqrt remains, which the double-statistics build needs.
    assert "__aeabi_ddiv" not in undefined and "__aeabi_dadd" not in undefined and " sqrt\n" not in undefined
    double_build = compile_m4(tmp_path / "c" / "edge_gru_runtime.c")
    assert "__aeabi_ddiv" in subprocess.run([NM, "-u", str(double_build)], capture_output=True, text=True).stdout


def test_tflite_micro_array_cross_compiles(tmp_path: Path) -> None:
    from edge_gru.bundle import write_bundle

    base = make_bundle(tmp_path / "base", units=4)
    payload = b"\x1c\x00\x00\x00TFL3" + bytes(1000)
    bundle = write_bundle(tmp_path / "b", base.manifest, base.weights, extra_files={"step_int8.tflite": payload})
    firmware_export.export(bundle.path, tmp_path / "c", int8=True)
    obj = compile_m4(tmp_path / "c" / "edge_gru_model_int8_tflite.c")
    assert sections(obj)[".rodata"] >= len(payload) + 4
