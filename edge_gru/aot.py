"""Ahead-of-time compiled GRU kernels: built with numba, loaded without it.

``import numba`` costs a small device ~60 MiB of RSS and ~130 ms, and the first JIT
compile of the kernels takes seconds. :func:`build` compiles the same kernel functions as
:mod:`edge_gru.kernels` with ``numba.pycc`` into a CPython extension module (only numpy
at run time); :func:`load_kernels` finds and imports a matching module without
importing numba or llvmlite. The numba backend uses it when one matches and falls back
to the JIT otherwise.

Where modules live (``edge-gru build-kernels --out DIR`` writes there):

1. ``$EDGE_GRU_KERNEL_DIR`` when set: the only place searched;
2. otherwise ``$NUMBA_CACHE_DIR`` when set — the directory a device already provides
   for the JIT's cache (the systemd unit's ``/var/cache/edge-gru``, where
   ``deploy/install.sh`` runs ``edge-gru build-kernels --out``) — then
   ``$XDG_CACHE_HOME/edge-gru/kernels`` (default ``~/.cache/edge-gru/kernels``).

``edge-gru build-kernels`` without ``--out`` writes to the first of these.

Each module ``_edge_gru_kernels_<hash>_<variant>.<ext-suffix>`` has a JSON sidecar that
says what it was built from. A module is used only when all of these match the running
process: the kernel source hash (so an upgrade of edge-gru never runs stale kernels),
the CPython ABI (extension suffix), the machine architecture, the numpy major version,
the numba version when numba is installed, and, for the ``host`` variant, the CPU (model
and feature flags from ``/proc/cpuinfo``). Two variants are built: ``host`` (LLVM's
``target_cpu='host'``, fastest, runs only on this CPU model) and ``generic`` (the
architecture's baseline ISA, runs on any CPU of the architecture). ``edge-gru
build-kernels`` times each variant it builds, and the JIT, on this CPU, and keeps the
fastest variant in ``_edge_gru_kernels.choice.json`` beside the modules: the loader
tries the kept variant first (LLVM's host tuning is not always the faster, e.g. on some
AVX-512 CPUs). Without a valid choice file ``host`` is preferred.

Choose with ``EDGE_GRU_KERNELS=auto|aot|jit`` (default ``auto``: ahead-of-time when a
module matches, else JIT).
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import logging
import math
import os
import platform
import sys
import sysconfig
import time
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

from edge_gru.errors import BackendUnavailableError, EdgeGruError

log = logging.getLogger(__name__)

KERNEL_DIR_ENV = "EDGE_GRU_KERNEL_DIR"
KERNEL_CHOICE_ENV = "EDGE_GRU_KERNELS"
MODULE_PREFIX = "_edge_gru_kernels"
VARIANTS = ("host", "generic")
SIDECAR_VERSION = 1
CHOICE_FILE = f"{MODULE_PREFIX}.choice.json"  # the variant build-kernels kept (no "_" after the prefix: no sidecar)

#: Exported functions and their signatures (C-contiguous float32 arrays, int64 rows).
EXPORTS: dict[str, str] = {
    "gru_step": "f4(f4[::1], f4[::1], f4[::1], b1)",
    "gru_step_batch": "void(f4[::1], f4[:, ::1], f4[:, ::1], i8[::1], f4[::1], f4[::1], b1)",
    "gru_windows": "void(f4[::1], f4[:, :, ::1], f4[::1], f4[::1], b1)",
    "stack_step": "void(f4[::1], i8[:, ::1], f4[::1], f4[::1], f4[::1])",
    "stack_step_batch": "void(f4[::1], i8[:, ::1], f4[:, ::1], f4[:, ::1], i8[::1], f4[::1], f4[:, ::1])",
    "stack_windows": "void(f4[::1], i8[:, ::1], f4[:, :, ::1], f4[::1], f4[:, ::1])",
}

_SOURCES = ("kernels.py", "kernel_layout.py")
_CPU_KEYS = (
    "vendor_id",
    "cpu family",
    "model",
    "model name",
    "flags",
    "Features",
    "CPU implementer",
    "CPU architecture",
    "CPU variant",
    "CPU part",
    "isa",
)


class KernelBuildError(EdgeGruError):
    """The ahead-of-time kernels cannot be compiled (no numba, no C compiler, unwritable directory)."""


def kernel_source_hash() -> str:
    """sha256 (16 hex digits) of the kernel sources and the export signatures."""
    digest = hashlib.sha256()
    here = Path(__file__).parent
    for name in _SOURCES:
        digest.update((here / name).read_bytes())
    digest.update(json.dumps(EXPORTS, sort_keys=True).encode())
    return digest.hexdigest()[:16]


def cpu_fingerprint() -> str:
    """A short hash of the CPU model and its feature flags (what a ``host`` build depends on)."""
    fields: list[str] = []
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        block = text.split("\n\n", 1)[0]
        for line in block.splitlines():
            key, _, value = line.partition(":")
            if key.strip() in _CPU_KEYS:
                value = " ".join(sorted(value.split())) if key.strip() in ("flags", "Features") else value.strip()
                fields.append(f"{key.strip()}={value}")
    except OSError:
        pass
    if not fields:
        fields = [platform.processor() or "unknown", platform.machine()]
    return hashlib.sha256("\n".join(fields).encode()).hexdigest()[:16]


def _installed_version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _numpy_major() -> int:
    version = _installed_version("numpy") or "0"
    return int(version.split(".")[0])


def extension_suffix() -> str:
    return str(sysconfig.get_config_var("EXT_SUFFIX") or importlib.machinery.EXTENSION_SUFFIXES[0])


def kernel_dirs() -> list[Path]:
    """Directories searched for compiled kernels, in order (see the module docstring)."""
    configured = os.environ.get(KERNEL_DIR_ENV)
    if configured:
        return [Path(configured).expanduser()]
    dirs = []
    numba_cache = os.environ.get("NUMBA_CACHE_DIR")
    if numba_cache:
        dirs.append(Path(numba_cache).expanduser())
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    dirs.append(Path(cache) / "edge-gru" / "kernels")
    return dirs


def default_kernel_dir() -> Path:
    """Where ``edge-gru build-kernels`` writes without ``--out``: the first of :func:`kernel_dirs`."""
    return kernel_dirs()[0]


def module_name(variant: str, source_hash: str | None = None) -> str:
    return f"{MODULE_PREFIX}_{source_hash or kernel_source_hash()}_{variant}"


@dataclass(frozen=True)
class CompiledKernels:
    """An imported ahead-of-time kernel module and what it was built for."""

    module: ModuleType
    path: Path
    variant: str
    info: dict[str, Any]

    @property
    def gru_step(self) -> Any:
        return self.module.gru_step

    @property
    def gru_step_batch(self) -> Any:
        return self.module.gru_step_batch

    @property
    def gru_windows(self) -> Any:
        return self.module.gru_windows

    @property
    def stack_step(self) -> Any:
        return self.module.stack_step

    @property
    def stack_step_batch(self) -> Any:
        return self.module.stack_step_batch

    @property
    def stack_windows(self) -> Any:
        return self.module.stack_windows

    @property
    def kind(self) -> str:
        return f"aot-{self.variant}"


def _mismatch(info: dict[str, Any], source_hash: str) -> str | None:
    """Why a sidecar's module cannot run here, or None when it can."""
    if info.get("sidecar_version") != SIDECAR_VERSION:
        return f"sidecar version {info.get('sidecar_version')!r}"
    if info.get("kernel_hash") != source_hash:
        return f"built from other kernel sources ({info.get('kernel_hash')} != {source_hash})"
    if info.get("ext_suffix") != extension_suffix():
        return f"built for another Python ({info.get('ext_suffix')})"
    if info.get("machine") != platform.machine():
        return f"built for {info.get('machine')}, this is {platform.machine()}"
    if info.get("numpy_major") != _numpy_major():
        return f"built against numpy {info.get('numpy_major')}.x"
    numba_here = _installed_version("numba")
    if numba_here is not None and info.get("numba") != numba_here:
        return f"built with numba {info.get('numba')}, numba {numba_here} is installed"
    if info.get("variant") == "host" and info.get("cpu") != cpu_fingerprint():
        return "built for another CPU model (host variant)"
    return None


def find_compiled(dirs: list[Path] | None = None) -> list[tuple[Path, dict[str, Any], str | None]]:
    """Every sidecar found: (module path, sidecar, why it does not match or None)."""
    source_hash = kernel_source_hash()
    found: list[tuple[Path, dict[str, Any], str | None]] = []
    for directory in dirs if dirs is not None else kernel_dirs():
        if not directory.is_dir():
            continue
        for sidecar in sorted(directory.glob(f"{MODULE_PREFIX}_*.json")):
            try:
                info = json.loads(sidecar.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                found.append((sidecar, {}, f"unreadable sidecar ({exc})"))
                continue
            path = directory / str(info.get("file", ""))
            why = _mismatch(info, source_hash)
            if why is None and not path.is_file():
                why = f"{path.name} is missing"
            found.append((path, info, why))
    return found


def _import_extension(name: str, path: Path) -> ModuleType:
    loader = importlib.machinery.ExtensionFileLoader(name, str(path))
    spec = importlib.util.spec_from_file_location(name, str(path), loader=loader)
    if spec is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


_loaded: dict[Path, CompiledKernels] = {}


def load_kernels(dirs: list[Path] | None = None) -> CompiledKernels | None:
    """Import the best matching compiled kernel module (``host`` before ``generic``), or None.

    Imports neither numba nor llvmlite. Modules that do not match are skipped with a debug
    log line saying why (``edge-gru build-kernels --check`` prints them).
    """
    candidates = []
    kept: dict[Path, str | None] = {}
    for path, info, why in find_compiled(dirs):
        if why is None:
            if path.parent not in kept:
                kept[path.parent] = read_choice(path.parent)
            candidates.append((_rank(str(info.get("variant")), kept[path.parent]), path, info))
        else:
            log.debug("skipping compiled kernels %s: %s", path, why)
    for _, path, info in sorted(candidates, key=lambda c: c[0]):
        if path in _loaded:
            return _loaded[path]
        try:
            module = _import_extension(str(info["module"]), path)
        except ImportError as exc:
            log.warning("cannot import compiled kernels %s (%s); trying the next", path, exc)
            continue
        if not all(hasattr(module, name) for name in EXPORTS):
            log.warning("compiled kernels %s lack some of %s; skipping", path, ", ".join(EXPORTS))
            continue
        compiled = CompiledKernels(module, path, str(info["variant"]), info)
        _loaded[path] = compiled
        return compiled
    return None


def _rank(variant: str, kept: str | None) -> int:
    """Load order: the variant build-kernels kept, then host before generic."""
    if variant == kept:
        return -1
    return VARIANTS.index(variant) if variant in VARIANTS else 9


def select_variant(timings_ns: Mapping[str, float]) -> str:
    """The variant to keep: the fastest ahead-of-time one timed (ns per batch; the JIT's entry is only compared).

    Ties go to ``VARIANTS`` order (``host`` first). Raises :class:`KernelBuildError` when none was timed.
    """
    timed = {v: float(t) for v, t in timings_ns.items() if v in VARIANTS and math.isfinite(float(t)) and t > 0}
    if not timed:
        raise KernelBuildError(f"no ahead-of-time variant was timed (got {sorted(timings_ns)})")
    return min(timed, key=lambda v: (timed[v], VARIANTS.index(v)))


def read_choice(directory: Path) -> str | None:
    """The variant kept in ``directory`` by build-kernels, or None (no file, or made for other sources or CPU)."""
    try:
        info = json.loads((directory / CHOICE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or info.get("kernel_hash") != kernel_source_hash():
        return None
    if info.get("cpu") != cpu_fingerprint() or info.get("kept") not in VARIANTS:
        return None
    return str(info["kept"])


def write_choice(directory: Path, timings_ns: Mapping[str, float], *, detail: Mapping[str, Any] | None = None) -> str:
    """Keep the fastest variant of ``timings_ns`` (merged with this CPU's earlier timings of variants not retimed)."""
    merged: dict[str, float] = {}
    try:
        old = json.loads((directory / CHOICE_FILE).read_text(encoding="utf-8"))
        if old.get("kernel_hash") == kernel_source_hash() and old.get("cpu") == cpu_fingerprint():
            merged.update({k: float(v) for k, v in old.get("timings_ns", {}).items()})
    except (OSError, ValueError, AttributeError, TypeError):
        pass
    merged.update({k: float(v) for k, v in timings_ns.items()})
    merged = {k: v for k, v in merged.items() if k == "jit" or (directory / f"{module_name(k)}.json").is_file()}
    kept = select_variant(merged)
    info = {
        "kept": kept,
        "kernel_hash": kernel_source_hash(),
        "cpu": cpu_fingerprint(),
        "timings_ns": merged,
        "measured_at": time.time(),
        **(dict(detail) if detail else {}),
    }
    tmp = directory / (CHOICE_FILE + ".tmp")
    tmp.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, directory / CHOICE_FILE)
    return kept


def kernel_choice() -> str:
    """``EDGE_GRU_KERNELS``: ``auto`` (default), ``aot`` or ``jit``."""
    choice = os.environ.get(KERNEL_CHOICE_ENV, "auto").strip().lower() or "auto"
    if choice not in ("auto", "aot", "jit"):
        raise BackendUnavailableError(f"{KERNEL_CHOICE_ENV}={choice!r}: expected auto, aot or jit")
    return choice


# -- building (imports numba) --------------------------------------------------------------------


def build(out: str | os.PathLike[str] | None = None, *, variants: tuple[str, ...] = VARIANTS) -> list[Path]:
    """Compile the kernels into ``out`` (default :func:`default_kernel_dir`); returns the module paths.

    Each variant is written to a temporary name and renamed into place with its sidecar
    last, so a daemon starting during a build sees the old module or the new one.
    """
    for variant in variants:
        if variant not in VARIANTS:
            raise KernelBuildError(f"unknown kernel variant {variant!r}; choose from {', '.join(VARIANTS)}")
    out_dir = Path(out).expanduser() if out is not None else default_kernel_dir()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise KernelBuildError(f"{out_dir}: cannot create the kernel directory ({exc})") from exc
    if not os.access(out_dir, os.W_OK):
        raise KernelBuildError(f"{out_dir}: not writable; pass --out DIR or set {KERNEL_DIR_ENV}")
    try:
        import numba  # noqa: F401
        from numba.core import cpu
        from numba.pycc import CC
        from numba.pycc import compiler as pycc_compiler
    except ImportError as exc:
        raise KernelBuildError(
            f"building the kernels needs numba and a C compiler ({exc}); pip install 'edge-gru[device]'"
        ) from exc

    from edge_gru import kernels

    source_hash = kernel_source_hash()
    base_flags = pycc_compiler.Flags

    class _KernelFlags(base_flags):  # type: ignore[misc, valid-type]
        """pycc compiles with default flags; use the kernels' own (error model, fastmath)."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.error_model = kernels.JIT_OPTIONS["error_model"]
            self.fastmath = cpu.FastMathOptions(set(kernels.JIT_OPTIONS["fastmath"]))

    from numba.core import codegen

    base_features = codegen.AOTCPUCodegen._customize_tm_features
    wide = _wide_vector_features()

    def _features(self: Any) -> str:
        """The host build may use 512-bit vectors (LLVM prefers 256 on AVX-512 CPUs): the tiles gain ~40 %."""
        return wide if self._cpu_name == "host" else ""

    written = []
    setattr(pycc_compiler, "Flags", _KernelFlags)  # noqa: B010 - a module attribute, patched for this build
    codegen.AOTCPUCodegen._customize_tm_features = _features  # type: ignore[method-assign]
    try:
        for variant in variants:
            name = module_name(variant, source_hash)
            try:
                cc = CC(name)
            except RuntimeError as exc:  # numba.pycc's toolchain check: it compiles a .c and a .cxx file
                raise KernelBuildError(
                    "numba.pycc found no working C and C++ compiler with the Python headers "
                    "(Debian, Raspberry Pi OS: apt-get install gcc g++ python3-dev)"
                ) from exc
            tmp_dir = out_dir / f".build-{name}-{os.getpid()}"
            tmp_dir.mkdir(exist_ok=True)
            cc.output_dir = str(tmp_dir)
            cc.verbose = False
            cc.target_cpu = "host" if variant == "host" else ""
            for export, signature in EXPORTS.items():
                cc.export(export, signature)(getattr(kernels, export).py_func)
            started = time.perf_counter()
            try:
                cc.compile()
            except Exception as exc:  # distutils/compiler failures come in many types
                raise KernelBuildError(f"compiling the {variant} kernels failed: {exc}") from exc
            built = [p for p in tmp_dir.iterdir() if p.name.startswith(name) and p.name.endswith(extension_suffix())]
            if not built:
                raise KernelBuildError(f"compiling the {variant} kernels produced no module in {tmp_dir}")
            target = out_dir / f"{name}{extension_suffix()}"
            os.replace(built[0], target)
            for leftover in tmp_dir.iterdir():
                leftover.unlink()
            tmp_dir.rmdir()
            info = {
                "sidecar_version": SIDECAR_VERSION,
                "module": name,
                "file": target.name,
                "variant": variant,
                "kernel_hash": source_hash,
                "ext_suffix": extension_suffix(),
                "python": platform.python_version(),
                "machine": platform.machine(),
                "cpu": cpu_fingerprint(),
                "cpu_name": _llvm_cpu_name() if variant == "host" else "generic",
                "cpu_features": wide if variant == "host" else "",
                "numpy_major": _numpy_major(),
                "numba": _installed_version("numba"),
                "edge_gru": _installed_version("edge-gru"),
                "built_at": time.time(),
                "build_seconds": round(time.perf_counter() - started, 2),
            }
            sidecar = out_dir / f"{name}.json"
            tmp_sidecar = sidecar.with_suffix(".json.tmp")
            tmp_sidecar.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
            os.replace(tmp_sidecar, sidecar)
            written.append(target)
            log.info("built %s kernels: %s (%.1f s)", variant, target, info["build_seconds"])
    finally:
        setattr(pycc_compiler, "Flags", base_flags)  # noqa: B010
        codegen.AOTCPUCodegen._customize_tm_features = base_features  # type: ignore[method-assign]
    _remove_stale(out_dir, source_hash)
    return written


def _remove_stale(out_dir: Path, source_hash: str) -> None:
    """Delete modules built from other kernel sources for this Python (they can never match again)."""
    for sidecar in out_dir.glob(f"{MODULE_PREFIX}_*.json"):
        try:
            info = json.loads(sidecar.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if info.get("kernel_hash") != source_hash and info.get("ext_suffix") == extension_suffix():
            for path in (out_dir / str(info.get("file", "")), sidecar):
                if path.is_file():
                    path.unlink()


def _wide_vector_features() -> str:
    """``-prefer-256-bit`` on CPUs with AVX-512 (so the host build uses zmm registers), else nothing."""
    try:
        import llvmlite.binding as ll

        if ll.get_host_cpu_features().get("avx512f"):
            return "-prefer-256-bit"
    except (ImportError, RuntimeError):  # pragma: no cover - llvmlite comes with numba
        pass
    return ""


def _llvm_cpu_name() -> str:
    try:
        import llvmlite.binding as ll

        return str(ll.get_host_cpu_name())
    except ImportError:  # pragma: no cover - llvmlite comes with numba
        return "host"


def loaded_runtime_modules() -> list[str]:
    """Names of numba/llvmlite modules in this process (a device using AOT kernels should have none)."""
    return sorted(m for m in sys.modules if m.split(".")[0] in ("numba", "llvmlite"))
