"""The model bundle: a directory with a manifest, float32 weights and optional TFLite files.

The bundle is the contract between training (desktop) and serving (device): everything a
backend needs to reproduce the trained model's forecasts, plus checksums so a half-copied
or edited bundle is refused before it can serve wrong numbers.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from edge_gru.adaptation import AdaptationSpec
from edge_gru.atomicfile import PUBLIC, atomic_write
from edge_gru.errors import BundleError
from edge_gru.layers import DenseLayer, GRULayer, Network, NetworkWeights, from_v1_arrays

FORMAT = "edge-gru-bundle"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)  # format 1 (one GRU + Dense(1)) is migrated on read
MANIFEST = "manifest.json"
WEIGHTS = "weights.npz"
STEP_F32 = "step_f32.tflite"
STEP_INT8 = "step_int8.tflite"
MODES = ("window", "stateful")
NORMALIZATIONS = ("fixed", "causal")


@dataclass(frozen=True)
class Normalization:
    """How raw readings become network inputs and network outputs become raw forecasts.

    ``fixed``: per-feature mean/std fitted on the training split. ``causal``: every stream
    normalizes itself with exponentially weighted mean/std of its own past (and present)
    readings, so one model serves any sensor; see :mod:`edge_gru.normalization`.
    """

    kind: str
    input_mean: tuple[float, ...] = ()
    input_std: tuple[float, ...] = ()
    target_mean: float = 0.0
    target_std: float = 1.0
    halflife: float = 0.0
    clip: float = 0.0

    def to_json(self) -> dict[str, Any]:
        if self.kind == "fixed":
            return {
                "kind": "fixed",
                "input_mean": list(self.input_mean),
                "input_std": list(self.input_std),
                "target_mean": self.target_mean,
                "target_std": self.target_std,
                "clip": self.clip,
            }
        return {"kind": "causal", "halflife": self.halflife, "clip": self.clip}

    @classmethod
    def from_json(cls, data: Any, features: int) -> Normalization:
        where = f"{MANIFEST}: field 'normalization'"
        if not isinstance(data, dict):
            raise BundleError(f"{where} must be an object")
        kind = data.get("kind")
        if kind not in NORMALIZATIONS:
            raise BundleError(f"{where}.kind is {kind!r}, expected one of {', '.join(NORMALIZATIONS)}")
        clip = _number(data.get("clip", 0.0), f"{where}.clip", minimum=0.0)
        if kind == "causal":
            halflife = _number(data.get("halflife"), f"{where}.halflife", minimum=1.0)
            return cls(kind="causal", halflife=halflife, clip=clip)
        mean = _vector(data.get("input_mean"), f"{where}.input_mean", features)
        std = _vector(data.get("input_std"), f"{where}.input_std", features)
        if any(s <= 0 for s in std):
            raise BundleError(f"{where}.input_std must be > 0")
        target_std = _number(data.get("target_std"), f"{where}.target_std")
        if target_std <= 0:
            raise BundleError(f"{where}.target_std must be > 0")
        return cls(
            kind="fixed",
            input_mean=mean,
            input_std=std,
            target_mean=_number(data.get("target_mean"), f"{where}.target_mean"),
            target_std=target_std,
            clip=clip,
        )


@dataclass(frozen=True)
class Manifest:
    """The parsed, validated ``manifest.json``."""

    network: Network
    window: int
    mode: str
    features: tuple[str, ...]
    target: str
    normalization: Normalization
    sample_period_s: float | None = None
    gap_factor: float = 3.0
    warmup: int = 1
    name: str = "model"
    bundle_id: str = ""
    training: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def input_features(self) -> int:
        return self.network.input_features

    @property
    def state_size(self) -> int:
        return self.network.state_size

    @property
    def horizon(self) -> int:
        return self.network.horizon

    @property
    def target_index(self) -> int:
        return self.features.index(self.target)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "id": self.bundle_id,
            "name": self.name,
            "architecture": {
                "input_features": self.input_features,
                "window": self.window,
                "layers": self.network.to_json(),
            },
            "mode": self.mode,
            "features": list(self.features),
            "target": self.target,
            "normalization": self.normalization.to_json(),
            "sample_period_s": self.sample_period_s,
            "gap_factor": self.gap_factor,
            "warmup": self.warmup,
            "training": self.training,
            "files": dict(sorted(self.files.items())),
        }
        data.update(self.extra)
        return data

    @classmethod
    def from_json(cls, data: Any) -> Manifest:
        if not isinstance(data, dict):
            raise BundleError(f"{MANIFEST}: top level must be a JSON object")
        if data.get("format") != FORMAT:
            raise BundleError(f"{MANIFEST}: field 'format' is {data.get('format')!r}, expected {FORMAT!r}")
        version = data.get("format_version")
        if isinstance(version, bool) or version not in READABLE_VERSIONS:
            raise BundleError(
                f"{MANIFEST}: field 'format_version' is {version!r}; this edge-gru reads versions "
                f"{', '.join(map(str, READABLE_VERSIONS))} (re-export the bundle or upgrade edge-gru)"
            )
        arch = data.get("architecture")
        if not isinstance(arch, dict):
            raise BundleError(f"{MANIFEST}: field 'architecture' must be an object")
        features_n = _integer(arch.get("input_features"), "architecture.input_features", 1)
        window = _integer(arch.get("window"), "architecture.window", 1)
        if version == 1:
            network = _v1_network(arch, features_n)
        else:
            try:
                network = Network.from_json(arch.get("layers"), features_n)
            except BundleError as exc:
                raise BundleError(f"{MANIFEST}: field {exc}") from None
        mode = data.get("mode")
        if mode not in MODES:
            raise BundleError(f"{MANIFEST}: field 'mode' is {mode!r}, expected one of {', '.join(MODES)}")
        features = data.get("features")
        if (
            not isinstance(features, list)
            or len(features) != features_n
            or not all(isinstance(f, str) and f for f in features)
            or len(set(features)) != len(features)
        ):
            raise BundleError(f"{MANIFEST}: field 'features' must list {features_n} distinct non-empty names")
        target = data.get("target")
        if target not in features:
            raise BundleError(f"{MANIFEST}: field 'target' is {target!r}, which is not one of 'features'")
        period = data.get("sample_period_s")
        if period is not None:
            period = _number(period, f"{MANIFEST}: field 'sample_period_s'")
            if period <= 0:
                raise BundleError(f"{MANIFEST}: field 'sample_period_s' must be > 0 or null")
        files = data.get("files", {})
        if not isinstance(files, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
            raise BundleError(f"{MANIFEST}: field 'files' must map file names to sha256 hex digests")
        for name in files:
            if name != os.path.basename(name) or name in ("", ".", "..", MANIFEST):
                raise BundleError(f"{MANIFEST}: field 'files' names {name!r}, which is not a plain file name")
        if data.get("adaptation") is not None:
            AdaptationSpec.from_json(data["adaptation"], where=f"{MANIFEST}: field 'adaptation'")
        training = data.get("training", {})
        if not isinstance(training, dict):
            raise BundleError(f"{MANIFEST}: field 'training' must be an object")
        known = {
            "format",
            "format_version",
            "id",
            "name",
            "architecture",
            "mode",
            "features",
            "target",
            "normalization",
            "sample_period_s",
            "gap_factor",
            "warmup",
            "training",
            "files",
        }
        return cls(
            network=network,
            window=window,
            mode=mode,
            features=tuple(features),
            target=str(target),
            normalization=Normalization.from_json(data.get("normalization"), features_n),
            sample_period_s=period,
            gap_factor=_number(data.get("gap_factor", 3.0), f"{MANIFEST}: field 'gap_factor'", minimum=1.0),
            warmup=_integer(data.get("warmup", 1), "warmup", 0),
            name=str(data.get("name", "model")),
            bundle_id=str(data.get("id", "")),
            training=training,
            files=dict(files),
            extra={k: v for k, v in data.items() if k not in known},
        )


@dataclass(frozen=True)
class Bundle:
    """A loaded, verified bundle."""

    path: Path
    manifest: Manifest
    weights: NetworkWeights

    @property
    def id(self) -> str:
        return self.manifest.bundle_id

    def file(self, name: str) -> Path | None:
        """Path of an optional file (e.g. ``step_int8.tflite``) when the bundle has it."""
        return self.path / name if name in self.manifest.files else None


def _v1_network(arch: dict[str, Any], features: int) -> Network:
    """Format 1's fixed architecture (one GRU, Dense(1)) as a layer list."""
    if arch.get("cell", "gru") != "gru":
        raise BundleError(f"{MANIFEST}: field 'architecture.cell' is {arch.get('cell')!r}, only 'gru' is served")
    units = _integer(arch.get("units"), "architecture.units", 1)
    reset_after = arch.get("reset_after")
    if not isinstance(reset_after, bool):
        raise BundleError(f"{MANIFEST}: field 'architecture.reset_after' must be true or false")
    return Network(features, (GRULayer(units, reset_after), DenseLayer(1)))


def _integer(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise BundleError(f"{MANIFEST}: field {name!r} is {value!r}, expected an integer >= {minimum}")
    return value


def _number(value: Any, where: str, minimum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BundleError(f"{where} is {value!r}, expected a finite number")
    if minimum is not None and value < minimum:
        raise BundleError(f"{where} is {value!r}, expected >= {minimum}")
    return float(value)


def _vector(value: Any, where: str, n: int) -> tuple[float, ...]:
    if not isinstance(value, list) or len(value) != n:
        raise BundleError(f"{where} must be a list of {n} numbers")
    return tuple(_number(v, where) for v in value)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _read_weights(path: Path, network: Network) -> NetworkWeights:
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except Exception as exc:  # a damaged zip raises many kinds (BadZipFile, NotImplementedError, zlib.error, ...)
        raise BundleError(f"{path}: cannot read weights ({exc}); the file is corrupt or not an .npz") from exc
    if "kernel" in arrays:  # format 1 keys
        weights = from_v1_arrays(arrays, where=str(path))
    else:
        weights = NetworkWeights.from_mapping(network, arrays, where=str(path))
    return weights


def load_bundle(path: str | os.PathLike[str]) -> Bundle:
    """Read and verify a bundle directory; every failure names the file and field."""
    root = Path(path)
    if not root.is_dir():
        raise BundleError(f"{root}: not a bundle directory (expected a folder with {MANIFEST})")
    manifest_path = root / MANIFEST
    try:
        raw = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise BundleError(f"{manifest_path}: missing; this folder is not an edge-gru bundle") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{manifest_path}: not valid JSON ({exc})") from exc
    manifest = Manifest.from_json(raw)
    if WEIGHTS not in manifest.files:
        raise BundleError(f"{manifest_path}: field 'files' has no checksum for {WEIGHTS}")
    for name, expected in manifest.files.items():
        file_path = root / name
        if not file_path.is_file():
            raise BundleError(f"{file_path}: listed in {MANIFEST} but missing")
        actual = sha256_file(file_path)
        if actual != expected:
            raise BundleError(
                f"{file_path}: sha256 {actual[:12]}… does not match {MANIFEST} ({expected[:12]}…); "
                "the bundle is corrupt or was edited: copy it again or re-export it"
            )
    weights = _read_weights(root / WEIGHTS, manifest.network)
    if weights.network != manifest.network:
        raise BundleError(
            f"{root / WEIGHTS}: shapes ({weights.network.input_features} inputs, {weights.network.describe()}) "
            f"do not match {MANIFEST} field 'architecture' ({manifest.input_features} inputs, "
            f"{manifest.network.describe()})"
        )
    return Bundle(path=root, manifest=manifest, weights=weights)


MODEL_FILES = (WEIGHTS, STEP_F32, STEP_INT8)


def compute_bundle_id(name: str, file_shas: Mapping[str, str], manifest: Manifest) -> str:
    """A short id that changes whenever anything that changes a forecast changes.

    It covers the weights and the TFLite step models (a re-calibrated int8 model is a
    different model even with the same float weights), not reports such as metrics.json.
    """
    net = manifest.network
    arch: list[Any]
    if net.is_classic:  # the format-1 form: ids of such bundles do not change with the format
        gru = net.layers[0]
        assert isinstance(gru, GRULayer)
        arch = [gru.units, net.input_features, manifest.window, gru.reset_after]
    else:
        arch = [net.input_features, manifest.window, net.to_json()]
    core = {
        "arch": arch,
        "mode": manifest.mode,
        "normalization": manifest.normalization.to_json(),
        "features": list(manifest.features),
        "target": manifest.target,
        "period": manifest.sample_period_s,
        "gap": manifest.gap_factor,
        "warmup": manifest.warmup,
        "files": {k: v for k, v in sorted(file_shas.items()) if k in MODEL_FILES},
    }
    if manifest.extra.get("adaptation") is not None:  # absent: the ids of bundles without it are unchanged
        core["adaptation"] = AdaptationSpec.from_json(manifest.extra["adaptation"]).to_json()
    digest = hashlib.sha256(json.dumps(core, sort_keys=True).encode()).hexdigest()[:12]
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in name) or "model"
    return f"{safe}-{digest}"


def write_bundle(
    out: str | os.PathLike[str],
    manifest: Manifest,
    weights: NetworkWeights,
    extra_files: Mapping[str, bytes] | None = None,
) -> Bundle:
    """Write a bundle directory (weights, extra files, then the manifest last) and return it loaded.

    The manifest is written last and atomically, so a crash mid-write leaves a bundle that
    fails its checks instead of one that silently serves a mix of old and new files.
    """
    weights.validate()
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    weights_path = root / WEIGHTS
    atomic_write(weights_path, lambda fh: np.savez(fh, **weights.as_dict()), mode=PUBLIC)  # type: ignore[arg-type]
    files[WEIGHTS] = sha256_file(weights_path)
    for name, payload in (extra_files or {}).items():
        if name != os.path.basename(name) or name in (MANIFEST, WEIGHTS):
            raise BundleError(f"cannot add {name!r} to a bundle: not a plain extra file name")
        atomic_write(root / name, functools.partial(_write_bytes, payload), mode=PUBLIC)
        files[name] = sha256_file(root / name)
    for name in manifest.files:
        if name not in files and (root / name).is_file():
            files[name] = sha256_file(root / name)
    bundle_id = compute_bundle_id(manifest.name, files, manifest)
    final = Manifest(**{**manifest.__dict__, "files": files, "bundle_id": bundle_id})
    text = json.dumps(final.to_json(), indent=2, sort_keys=False) + "\n"
    atomic_write(root / MANIFEST, lambda fh: fh.write(text.encode()), mode=PUBLIC)
    return load_bundle(root)


def _write_bytes(payload: bytes, fh: BinaryIO) -> None:
    fh.write(payload)
