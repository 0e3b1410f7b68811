"""``export()``: a bundle in, a folder of C99 sources out, and what the model costs on a device."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import BinaryIO

from edge_gru.atomicfile import PUBLIC, atomic_write
from edge_gru.bundle import STEP_INT8, Bundle, load_bundle
from edge_gru.errors import EdgeGruError
from firmware_export import c_literals
from firmware_export.footprint import Footprint, footprint
from firmware_export.model_source import (
    DEFAULT_PREFIX,
    GENERATED,
    apply_prefix,
    banner,
    model_header,
    model_source,
    tflite_source,
)

RUNTIME_FILES = ("edge_gru_runtime.h", "edge_gru_runtime.c", "main.c", "Makefile")
MAX_PREFIX = 40


class ExportError(EdgeGruError):
    """The C export cannot be written (bad prefix, output folder not writable)."""


@dataclass(frozen=True)
class ExportReport:
    """What was written and what it costs: flash for the model's constants, RAM per stream."""

    out_dir: Path
    bundle_id: str
    prefix: str
    int8: bool
    files: tuple[Path, ...]
    footprint: Footprint
    tflite_bytes: int = 0  # the int8 TFLite Micro array, only linked when a firmware uses it
    notes: tuple[str, ...] = field(default=())

    @property
    def flash_bytes(self) -> int:
        return self.footprint.flash_bytes

    @property
    def ram_bytes(self) -> int:
        return self.footprint.ram_bytes

    def format(self) -> str:
        f = self.footprint
        weights = "int8 weights + float scales" if self.int8 else "float32 weights"
        lines = [
            f"exported bundle {self.bundle_id} to {self.out_dir}",
            f"  flash   {f.flash_bytes:>9,} B  = {weights} {f.weight_bytes:,} B + biases and normalization "
            f"{f.constant_bytes:,} B (runtime code not included)",
            f"  RAM     {f.ram_bytes:>9,} B  = state {f.state_bytes:,} B per stream (edge_gru_state) + stack scratch "
            f"{f.scratch_bytes:,} B",
            f"  compute {f.macs_per_sample:>9,} multiply-adds per sample, {f.parameters:,} parameters",
        ]
        if self.tflite_bytes:
            lines.append(
                f"  tflite  {self.tflite_bytes:>9,} B  int8 step model for TensorFlow Lite Micro "
                f"({self.prefix}_model_int8_tflite.c, flash only if linked)"
            )
        lines.append("  files   " + ", ".join(p.name for p in self.files))
        lines.append(f"  build   cd {self.out_dir} && make && ./{self.prefix}_forecast < samples.txt")
        lines.extend(f"  note    {n}" for n in self.notes)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()


def runtime_source(name: str) -> str:
    """A runtime file shipped as package data (``firmware_export/runtime/``)."""
    return resources.files("firmware_export").joinpath("runtime", name).read_text(encoding="utf-8")


def export(
    bundle_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    int8: bool = False,
    prefix: str = DEFAULT_PREFIX,
) -> ExportReport:
    """Write the C99 runtime, the model as ``const`` arrays, a Makefile and an example for ``bundle_dir``.

    Any layer list of the bundle is exported (GRU layers, then dense layers; the last one's
    width is the horizon): the model source holds a layer table that the runtime loops over.
    ``int8`` stores every layer's weight matrices as int8 with one float scale per output
    column (states and activations stay float). ``prefix`` renames every file, symbol and
    macro (``{prefix}_forecast``, ``{PREFIX}_STATE_SIZE``) so several models link into one firmware.
    Raises :class:`~edge_gru.errors.BundleError` for a bad bundle and :class:`ExportError`
    for a bad prefix or an output folder that cannot be written.
    """
    if not c_literals.is_identifier(prefix) or len(prefix) > MAX_PREFIX:
        raise ExportError(
            f"prefix {prefix!r} is not usable: it must be a C identifier (letters, digits, '_', not starting "
            f"with a digit) of at most {MAX_PREFIX} characters, e.g. 'edge_gru' or 'room1'"
        )
    bundle = load_bundle(bundle_dir)
    out = Path(out_dir)
    _prepare_out_dir(out, bundle)

    tflite_path = bundle.file(STEP_INT8)
    tflite = tflite_path.read_bytes() if tflite_path is not None else b""
    sources: dict[str, str] = {
        f"{prefix}_model.h": model_header(bundle, int8=int8, prefix=prefix, has_tflite=bool(tflite)),
        f"{prefix}_model.c": model_source(bundle, int8=int8, prefix=prefix),
    }
    for name in RUNTIME_FILES:
        text = apply_prefix(runtime_source(name), prefix)
        out_name = apply_prefix(name, prefix)
        head = banner(out_name, bundle, "edge-gru C99 runtime", make=name == "Makefile")
        sources[out_name] = head + text
    tflite_name = f"{prefix}_model_int8_tflite.c"
    if tflite:
        sources[tflite_name] = tflite_source(bundle, tflite, prefix=prefix)
    else:
        _remove_generated(out / tflite_name)

    written = []
    for name, text in sources.items():
        path = out / name
        try:
            atomic_write(path, functools.partial(_write_text, text), mode=PUBLIC)
        except OSError as exc:
            raise ExportError(f"{path}: cannot write ({exc.strerror or exc}); choose another --out folder") from exc
        written.append(path)

    notes = []
    if int8 and not tflite:
        notes.append("the bundle has no step_int8.tflite, so no TensorFlow Lite Micro array was written")
    return ExportReport(
        out_dir=out,
        bundle_id=bundle.id,
        prefix=prefix,
        int8=int8,
        files=tuple(written),
        footprint=footprint(bundle.manifest, int8=int8),
        tflite_bytes=len(tflite),
        notes=tuple(notes),
    )


def _prepare_out_dir(out: Path, bundle: Bundle) -> None:
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out}: exists and is not a folder; choose another --out folder")
    try:
        if out.resolve() == bundle.path.resolve():
            raise ExportError(f"{out}: is the bundle folder itself; write the C sources to another --out folder")
    except OSError:
        pass
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"{out}: cannot create the output folder ({exc.strerror or exc})") from exc
    if not os.access(out, os.W_OK | os.X_OK):
        raise ExportError(f"{out}: the output folder is not writable; choose another --out folder")


def _remove_generated(path: Path) -> None:
    """Delete a stale generated file (from an export of another bundle), never a user's own file."""
    try:
        if path.is_file() and GENERATED in path.read_text(encoding="utf-8", errors="replace")[:400]:
            path.unlink()
    except OSError:
        pass


def _write_text(text: str, fh: BinaryIO) -> None:
    fh.write(text.encode("utf-8"))
