"""The C export on a 32-bit Raspberry Pi instruction set: built with arm-linux-gnueabihf-gcc for a
Cortex-A53 with NEON (a Pi 3 or Zero 2 on a 32-bit OS), run under qemu-arm-static, compared with
the Python pool on x86-64.

Skipped where the cross compiler or qemu is not installed (Debian packages
``gcc-arm-linux-gnueabihf`` and ``qemu-user-static``).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import firmware_export
from tests.bundles import make_bundle
from tests.test_firmware_export import BEIJING, CAUSAL, assert_matches, pool_forecasts, read_series, sample_lines

GCC = shutil.which("arm-linux-gnueabihf-gcc") or ""
QEMU = shutil.which("qemu-arm-static") or shutil.which("qemu-arm") or ""
PI3 = "-std=c99 -Wall -Wextra -Werror -pedantic -O3 -mcpu=cortex-a53 -mfpu=neon-fp-armv8"

pytestmark = pytest.mark.skipif(
    not (GCC and QEMU), reason="needs arm-linux-gnueabihf-gcc and qemu-arm-static (apt-get install ...)"
)


@pytest.mark.parametrize("int8", [False, True], ids=["float32", "int8"])
def test_armv7_build_matches_the_pool(int8: bool, tmp_path: Path) -> None:
    values, ts = read_series(*BEIJING, 2500, start=48)
    bundle = make_bundle(
        tmp_path / "b", units=24, features=3, window=6, mode="window", normalization=CAUSAL, sample_period_s=3600.0
    )
    out = tmp_path / "c"
    firmware_export.export(bundle.path, out, int8=int8)
    done = subprocess.run(
        ["make", "-B", "-C", str(out), f"CC={GCC}", f"CFLAGS={PI3}", "LDFLAGS=-static"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    run = subprocess.run(
        [QEMU, str(out / "edge_gru_forecast"), "--ts"],
        input="\n".join(sample_lines(values, ts)) + "\n",
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    c = np.array([float(v) for v in run.stdout.split()])
    reference = bundle
    if int8:
        from edge_gru.bundle import write_bundle

        reference = write_bundle(tmp_path / "deq", bundle.manifest, firmware_export.dequantized_weights(bundle.weights))
    assert_matches(c, pool_forecasts(reference, values, ts), float(np.nanstd(values[:, 0])), min_forecasts=2000)
