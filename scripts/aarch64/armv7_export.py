"""The C export of the default model on 32-bit ARM (armv7l: a Pi 2/3/Zero 2 on a 32-bit OS).

``edge-gru export-c`` (float32 and ``--int8``) on the host; the generated Makefile built
with ``arm-linux-gnueabihf-gcc -static`` for a Cortex-A7 with NEON (the oldest 32-bit Pi
core that runs the same binary as a Pi 3 in 32-bit mode); the program run under
``qemu-arm-static`` on each stored stream (with its NaN, gap, duplicate and out-of-order
readings) and compared with the Python stream pool on x86-64 fed the same float32 readings,
as ``tests/test_firmware_export.py`` does: the same forecast/no-forecast pattern and every
forecast within 1e-5 of the stream's scale (int8: against the pool running the
dequantized weights the int8 runtime computes with).

Run by ``scripts/test-aarch64`` (stage ``armv7``); exits 1 when any check fails.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts" / "aarch64" / "checks"))

from arm_checks import TOL, Report, compare_forecasts, load_reference, stream_scale  # noqa: E402

CC = "arm-linux-gnueabihf-gcc"
CFLAGS = "-std=c99 -O3 -Wall -Wextra -Werror -pedantic -mcpu=cortex-a7 -mfpu=neon-vfpv4 -mfloat-abi=hard"


def sample_lines(values: np.ndarray, ts: np.ndarray) -> str:
    """``ts,value`` lines; float32 values printed so that C reads back the same float32."""
    return "".join(
        f"{float(t)!r},{format(float(v), '.9g')}\n" for t, v in zip(ts, values.astype(np.float32), strict=True)
    )


def elf_facts(path: Path) -> tuple[int, str, str, str]:
    """(word size, machine, float ABI, linking) read from an ELF header, without the ``file`` tool."""
    import struct

    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 1 or data[5] != 1:  # 32-bit little-endian only
        return (64 if data[4:5] == b"\x02" else 0, "?", "?", "?")
    machine, _, _, phoff, _, flags, _, phentsize, phnum = struct.unpack_from("<HIIIIIHHH", data, 18)
    interp = any(struct.unpack_from("<I", data, phoff + k * phentsize)[0] == 3 for k in range(phnum))  # PT_INTERP
    return (
        32,
        "ARM" if machine == 40 else f"machine {machine}",
        "hard-float" if flags & 0x400 else "soft-float",  # EF_ARM_ABI_FLOAT_HARD
        "dynamic" if interp else "static",
    )


def pool_forecasts(bundle: Path, values: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """The Python pool (numpy backend, one stream) fed the same float32 readings: forecast or NaN per reading."""
    import edge_gru

    # the C export serves the bare GRU (docs/firmware.md): compare with the pool's adaptation off
    from edge_gru.adaptation import OFF

    pool = edge_gru.load(bundle, backend="numpy").pool(max_streams=1, adaptation=OFF)
    x = values.astype(np.float32).astype(np.float64)
    return np.array([pool.update(["s"], x[i : i + 1], ts[i : i + 1])[0] for i in range(len(x))])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", default=str(REPO / "models" / "default"))
    ap.add_argument("--reference", required=True, help="readings to feed (make_reference.py output)")
    ap.add_argument("--work", required=True)
    args = ap.parse_args()

    import firmware_export
    from edge_gru.bundle import load_bundle, write_bundle

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    ref = load_reference(args.reference)
    ids = [str(s) for s in ref["readings.ids"]]
    values, ts = ref["readings.values"], ref["readings.ts"]
    scale = stream_scale(values)
    qemu = shutil.which("qemu-arm-static") or shutil.which("qemu-arm")
    edge_gru_cli = Path(sys.executable).with_name("edge-gru")
    report = Report()
    if qemu is None or shutil.which(CC) is None:
        report.check(
            "tools", False, f"needs {CC} and qemu-arm-static (apt-get install gcc-arm-linux-gnueabihf qemu-user-static)"
        )
        return report.finish("armv7 C export")

    bundle = load_bundle(args.bundle)
    for kind in ("float32", "int8"):
        out = work / kind
        shutil.rmtree(out, ignore_errors=True)
        cmd = [str(edge_gru_cli), "export-c", args.bundle, "--out", str(out)] + (["--int8"] if kind == "int8" else [])
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            report.check(f"{kind}: edge-gru export-c", False, done.stderr.strip()[-500:])
            continue
        t0 = time.monotonic()
        build = subprocess.run(
            ["make", "-B", "-C", str(out), f"CC={CC}", f"CFLAGS={CFLAGS}", "LDFLAGS=-static"],
            capture_output=True,
            text=True,
        )
        binary = out / "edge_gru_forecast"
        if build.returncode != 0 or not binary.exists():
            report.check(f"{kind}: cross-compile", False, (build.stderr or build.stdout).strip()[-800:])
            continue
        elf = elf_facts(binary)
        report.check(
            f"{kind}: static 32-bit ARM executable",
            elf == (32, "ARM", "hard-float", "static"),
            f"{', '.join(map(str, elf))}; {binary.stat().st_size} B, built in {time.monotonic() - t0:.1f} s",
        )
        reference_bundle = bundle.path
        if kind == "int8":
            deq = Path(tempfile.mkdtemp(dir=work)) / "dequantized"
            write_bundle(deq, bundle.manifest, firmware_export.dequantized_weights(bundle.weights))
            reference_bundle = deq
        got = np.full(values.shape, np.nan)
        want = np.full(values.shape, np.nan)
        t1 = time.monotonic()
        for s in range(len(ids)):
            run = subprocess.run(
                [qemu, "-cpu", "cortex-a7", str(binary), "--ts"],
                input=sample_lines(values[:, s], ts[:, s]),
                capture_output=True,
                text=True,
                timeout=300,
            )
            if run.returncode != 0:
                report.check(f"{kind}: {ids[s]} under qemu-arm", False, f"exit {run.returncode}: {run.stderr[-300:]}")
                break
            got[:, s] = [float(v) for v in run.stdout.split()]
            want[:, s] = pool_forecasts(Path(reference_bundle), values[:, s], ts[:, s])
        else:
            print(f"  {kind}: {values.size} readings through qemu-arm in {time.monotonic() - t1:.1f} s", flush=True)
            what = "pool" if kind == "float32" else "pool on the dequantized weights"
            compare_forecasts(report, f"{kind}: armv7 C forecasts vs x86-64 Python {what}", got, want, scale, TOL)
    return report.finish("armv7 C export")


if __name__ == "__main__":
    sys.exit(main())
