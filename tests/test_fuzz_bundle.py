"""Fuzzing the bundle loader: corrupted, truncated, swapped and hostile files.

Each damaged bundle is refused with a :class:`BundleError` naming the file, or (when the
damage is in a field that does not matter) loads and serves; never another exception,
never code execution from a pickle, and never a write anywhere.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import edge_gru
from edge_gru.bundle import MANIFEST, WEIGHTS, load_bundle, sha256_file
from edge_gru.errors import BundleError
from tests.bundles import make_bundle

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def originals(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("originals")
    make_bundle(root / "a", units=6, seed=1, name="a")
    make_bundle(root / "b", units=9, seed=2, name="b")
    make_bundle(root / "w", units=6, mode="window", window=4, seed=3, name="w")
    return {"a": root / "a", "b": root / "b", "w": root / "w"}


def tree(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


def refresh_checksum(bundle: Path, name: str) -> None:
    """Make the manifest vouch for the (damaged) file, as an attacker with write access would."""
    manifest = json.loads((bundle / MANIFEST).read_text())
    manifest["files"][name] = sha256_file(bundle / name)
    (bundle / MANIFEST).write_text(json.dumps(manifest))


def load_or_refuse(bundle: Path, workdir: Path) -> edge_gru.Model | None:
    """Load through the public API; assert only BundleError escapes and nothing is written."""
    before_bundle, before_work = tree(bundle), tree(workdir)
    cwd = os.getcwd()
    os.chdir(workdir)
    try:
        model = edge_gru.load(bundle, backend="numpy")
    except BundleError as exc:
        message = str(exc)
        assert str(bundle) in message or MANIFEST in message, message
        model = None
    finally:
        os.chdir(cwd)
    assert tree(bundle) == before_bundle, "loading a bundle changed its files"
    assert tree(workdir) == before_work, "loading a bundle wrote a file"
    if model is not None:
        m = model.manifest
        out = model.predict(np.zeros((2, max(m.window, 1), m.input_features)))
        assert out.shape == (2,)
    return model


@FUZZ
@given(
    which=st.sampled_from(["a", "w"]),
    target=st.sampled_from([MANIFEST, WEIGHTS]),
    flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)), min_size=1, max_size=8),
    vouch=st.booleans(),
)
def test_flipped_bytes_are_refused_or_harmless(
    originals: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
    which: str,
    target: str,
    flips: list,
    vouch: bool,
) -> None:
    work = tmp_path_factory.mktemp("flip")
    bundle = work / "bundle"
    shutil.copytree(originals[which], bundle)
    data = bytearray((bundle / target).read_bytes())
    for at, xor in {int(where * len(data)): xor for where, xor in flips}.items():  # distinct bytes
        data[at] ^= xor
    (bundle / target).write_bytes(bytes(data))
    if vouch and target == WEIGHTS:
        refresh_checksum(bundle, WEIGHTS)
    model = load_or_refuse(bundle, work)
    if target == WEIGHTS and not vouch:
        assert model is None  # the checksum always catches damage to the weights


@FUZZ
@given(
    which=st.sampled_from(["a", "w"]),
    target=st.sampled_from([MANIFEST, WEIGHTS]),
    keep=st.floats(0, 1, exclude_max=True),
    vouch=st.booleans(),
)
def test_truncated_files_are_refused(
    originals: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
    which: str,
    target: str,
    keep: float,
    vouch: bool,
) -> None:
    work = tmp_path_factory.mktemp("trunc")
    bundle = work / "bundle"
    shutil.copytree(originals[which], bundle)
    data = (bundle / target).read_bytes()
    (bundle / target).write_bytes(data[: int(keep * (len(data) - 2))])  # at least the closing "}\\n" goes
    if vouch and target == WEIGHTS:
        refresh_checksum(bundle, WEIGHTS)
    assert load_or_refuse(bundle, work) is None


@pytest.mark.parametrize(
    "damage",
    [
        "swap_manifest_and_weights",
        "weights_of_another_bundle",
        "weights_of_another_bundle_vouched",
        "manifest_of_another_bundle",
        "missing_weights",
        "missing_manifest",
        "weights_is_a_directory",
        "weights_symlink_to_elsewhere",
        "empty_files",
        "manifest_names_a_path_outside",
    ],
)
def test_swapped_missing_and_misplaced_files_are_refused(
    originals: dict[str, Path], tmp_path: Path, damage: str
) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(originals["a"], bundle)
    other = originals["b"]
    if damage == "swap_manifest_and_weights":
        m, w = (bundle / MANIFEST).read_bytes(), (bundle / WEIGHTS).read_bytes()
        (bundle / MANIFEST).write_bytes(w)
        (bundle / WEIGHTS).write_bytes(m)
    elif damage.startswith("weights_of_another"):
        shutil.copy(other / WEIGHTS, bundle / WEIGHTS)  # other shapes (U=9 for U=6)
        if damage.endswith("vouched"):
            refresh_checksum(bundle, WEIGHTS)
    elif damage == "manifest_of_another_bundle":
        shutil.copy(other / MANIFEST, bundle / MANIFEST)
    elif damage == "missing_weights":
        (bundle / WEIGHTS).unlink()
    elif damage == "missing_manifest":
        (bundle / MANIFEST).unlink()
    elif damage == "weights_is_a_directory":
        (bundle / WEIGHTS).unlink()
        (bundle / WEIGHTS).mkdir()
    elif damage == "weights_symlink_to_elsewhere":
        outside = tmp_path / "elsewhere.npz"
        shutil.copy(other / WEIGHTS, outside)
        (bundle / WEIGHTS).unlink()
        (bundle / WEIGHTS).symlink_to(outside)
    elif damage == "empty_files":
        (bundle / MANIFEST).write_bytes(b"")
        (bundle / WEIGHTS).write_bytes(b"")
    elif damage == "manifest_names_a_path_outside":
        secret = tmp_path / "secret.txt"
        secret.write_text("not a model file")
        manifest = json.loads((bundle / MANIFEST).read_text())
        manifest["files"]["../secret.txt"] = sha256_file(secret)
        (bundle / MANIFEST).write_text(json.dumps(manifest))
    assert load_or_refuse(bundle, tmp_path) is None


class _Payload:
    """What a hostile weights file would run on load: create a marker file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("form", ["object_array_in_npz", "raw_pickle", "npy_with_pickle"])
def test_a_weights_file_carrying_a_pickle_is_refused_and_never_run(
    originals: dict[str, Path], tmp_path: Path, form: str
) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(originals["a"], bundle)
    marker = tmp_path / "pwned"
    with np.load(originals["a"] / WEIGHTS) as npz:
        arrays: dict[str, Any] = {k: npz[k] for k in npz.files}
    evil = np.empty(1, dtype=object)
    evil[0] = _Payload(str(marker))
    if form == "object_array_in_npz":
        arrays["kernel"] = evil
        np.savez(bundle / WEIGHTS, **arrays)
    elif form == "raw_pickle":
        (bundle / WEIGHTS).write_bytes(pickle.dumps(_Payload(str(marker))))
    else:
        buf = io.BytesIO()
        np.save(buf, evil, allow_pickle=True)
        (bundle / WEIGHTS).write_bytes(buf.getvalue())
    refresh_checksum(bundle, WEIGHTS)
    with pytest.raises(BundleError) as err:
        load_bundle(bundle)
    assert WEIGHTS in str(err.value)
    assert load_or_refuse(bundle, tmp_path) is None
    assert not marker.exists(), "unpickling ran code from the weights file"
    # the payload is real: unpickling it does create the marker
    pickle.loads(pickle.dumps(_Payload(str(marker))))
    assert marker.exists()


json_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=10), st.just([]), st.just({})
)


def paths(doc: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix] if prefix else []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += paths(v, (*prefix, i))
    return out


@FUZZ
@given(which=st.sampled_from(["a", "w"]), data=st.data())
def test_any_manifest_field_with_any_value_is_refused_or_served(
    originals: dict[str, Path], tmp_path_factory: pytest.TempPathFactory, which: str, data: st.DataObject
) -> None:
    work = tmp_path_factory.mktemp("field")
    bundle = work / "bundle"
    shutil.copytree(originals[which], bundle)
    manifest = json.loads((bundle / MANIFEST).read_text())
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(paths(manifest)))
        node = manifest
        for key in path[:-1]:
            node = node[key]
        if data.draw(st.booleans()) and isinstance(node, dict):
            del node[path[-1]]
        else:
            node[path[-1]] = data.draw(json_leaf)
    (bundle / MANIFEST).write_text(json.dumps(manifest))
    load_or_refuse(bundle, work)


# -- TFLite step models: a damaged flatbuffer must be refused, never crash the process -------------

TFLITE_PROBE = """
import sys, json
import numpy as np
import edge_gru
from edge_gru.errors import EdgeGruError
out = []
for path in sys.argv[1:]:
    try:
        model = edge_gru.load(path, backend="tflite")
        m = model.manifest
        # what the daemon does before serving a bundle: a window and one serving step from zero
        y = model.predict(np.zeros((1, max(m.window, 1), m.input_features)))
        s = model.backend.step(
            np.zeros((1, m.input_features), np.float32), np.zeros((1, m.state_size), np.float32), np.zeros(1, np.int64)
        )
        out.append("ok")
    except EdgeGruError as exc:
        named = path.rstrip("/") + "/step_f32.tflite" in str(exc)
        out.append("refused:" + type(exc).__name__ + ("" if named else ":unnamed:" + str(exc)[:120]))
    except Exception as exc:
        out.append("other:" + type(exc).__name__ + ":" + str(exc)[:120])
    print(json.dumps(out[-1]), flush=True)
"""


@pytest.fixture(scope="module")
def tflite_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-layer stack with a Dense(3) head: the most tensors and ops to damage."""
    from edge_gru.bundle import STEP_F32
    from edge_gru.layers import DenseLayer, GRULayer, Network
    from edge_gru.train.tflite_export import convert_float
    from tests.bundles import random_network_weights

    root = tmp_path_factory.mktemp("tflite")
    net = Network(2, (GRULayer(5), GRULayer(4, reset_after=False), DenseLayer(6, "relu"), DenseLayer(3)))
    weights = random_network_weights(net, seed=1)
    make_bundle(root / "t", weights=weights, name="t", extra_files={STEP_F32: convert_float(weights)})
    return root / "t"


def test_damaged_tflite_step_models_are_refused_without_crashing(tflite_bundle: Path, tmp_path: Path) -> None:
    from edge_gru.bundle import STEP_F32

    original = (tflite_bundle / STEP_F32).read_bytes()
    rng = np.random.default_rng(5)
    paths = []
    for i in range(60):
        data = bytearray(original)
        if i % 3 == 0:
            for at in rng.choice(len(data), size=int(rng.integers(1, 9)), replace=False):
                data[at] ^= int(rng.integers(1, 256))
        elif i % 3 == 1:
            data = data[: int(rng.integers(0, len(data)))]
        else:
            for at in rng.choice(len(data) - 4, size=int(rng.integers(1, 4)), replace=False):
                data[at : at + 4] = rng.bytes(4)
        bundle = tmp_path / f"m{i}"
        shutil.copytree(tflite_bundle, bundle)
        (bundle / STEP_F32).write_bytes(bytes(data))
        refresh_checksum(bundle, STEP_F32)
        paths.append(str(bundle))
    swapped = tmp_path / "swapped"
    shutil.copytree(tflite_bundle, swapped)
    (swapped / STEP_F32).write_bytes((tflite_bundle / WEIGHTS).read_bytes())
    refresh_checksum(swapped, STEP_F32)
    proc = subprocess.run(
        [sys.executable, "-c", TFLITE_PROBE, str(tflite_bundle), str(swapped), *paths],
        capture_output=True,
        text=True,
        timeout=300,
    )
    outcomes = [json.loads(line) for line in proc.stdout.splitlines()]
    assert proc.returncode == 0, (
        f"the process died ({proc.returncode}) after {len(outcomes)} bundles: {proc.stderr[-2000:]}"
    )
    assert outcomes[0] == "ok"  # the undamaged bundle serves: the probe can tell
    assert outcomes[1].startswith("refused:")
    others = [o for o in outcomes if not (o == "ok" or o.startswith("refused:"))]
    assert not others, others
    unnamed = [o for o in outcomes if ":unnamed:" in o]
    assert not unnamed, unnamed  # every refusal names the damaged file
    assert sum(o.startswith("refused:") for o in outcomes) >= 10
