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
from edge_gru.layers import DenseLayer, GRULayer, Network
from tests.bundles import make_bundle
from tests.test_firmware_export import (
    BEIJING,
    CAUSAL,
    assert_matches,
    pool_forecasts,
    read_series,
    run_c,
    sample_lines,
)

GCC = shutil.which("arm-linux-gnueabihf-gcc") or ""
QEMU = shutil.which("qemu-arm-static") or shutil.which("qemu-arm") or ""
PI3 = "-std=c99 -Wall -Wextra -Werror -pedantic -O3 -mcpu=cortex-a53 -mfpu=neon-fp-armv8"

pytestmark = pytest.mark.skipif(
    not (GCC and QEMU), reason="needs arm-linux-gnueabihf-gcc and qemu-arm-static (apt-get install ...)"
)


NETWORKS = {
    "GRU(24)": Network(3, (GRULayer(24), DenseLayer(1))),
    "GRU(16)>GRU(8,before)>Dense(6,relu)>Dense(3)": Network(
        3, (GRULayer(16), GRULayer(8, reset_after=False), DenseLayer(6, "relu"), DenseLayer(3))
    ),
}


@pytest.mark.parametrize("int8", [False, True], ids=["float32", "int8"])
@pytest.mark.parametrize("name", list(NETWORKS))
def test_armv7_build_matches_the_pool(name: str, int8: bool, tmp_path: Path) -> None:
    values, ts = read_series(*BEIJING, 2500, start=48)
    net = NETWORKS[name]
    bundle = make_bundle(
        tmp_path / "b", network=net, window=6, mode="window", normalization=CAUSAL, sample_period_s=3600.0
    )
    out = tmp_path / "c"
    firmware_export.export(bundle.path, out, int8=int8)
    done = subprocess.run(
        ["make", "-B", "-C", str(out), f"CC={GCC}", f"CFLAGS={PI3}", "LDFLAGS=-static"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    c, _ = run_c(out / "edge_gru_forecast", sample_lines(values, ts), "--ts", horizon=net.horizon, runner=QEMU)
    reference = bundle
    if int8:
        from edge_gru.bundle import write_bundle

        reference = write_bundle(tmp_path / "deq", bundle.manifest, firmware_export.dequantized_weights(bundle.weights))
    py = pool_forecasts(reference, values, ts)
    assert_matches(c, py, float(np.nanstd(values[:, 0])), min_forecasts=2000 * net.horizon)
