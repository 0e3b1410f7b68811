"""The bundle format refuses every kind of damage with an error that names the file and field."""

from __future__ import annotations

import io
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

import edge_gru
from edge_gru.bundle import MANIFEST, WEIGHTS, load_bundle, sha256_file
from edge_gru.errors import BundleError
from edge_gru.layers import DenseLayer, GRULayer, Network
from tests.bundles import make_bundle, random_weights


def _rewrite_manifest(bundle_dir: Path, **changes: object) -> None:
    data = json.loads((bundle_dir / MANIFEST).read_text())
    for key, value in changes.items():
        target = data
        *parents, leaf = key.split(".")
        for p in parents:
            target = target[int(p)] if isinstance(target, list) else target[p]
        if isinstance(target, list):
            target[int(leaf)] = value
        else:
            target[leaf] = value
    (bundle_dir / MANIFEST).write_text(json.dumps(data))


def test_round_trip_keeps_weights_and_manifest(tmp_path: Path) -> None:
    b = make_bundle(tmp_path / "b", units=6, features=2, reset_after=False, sample_period_s=60.0)
    again = load_bundle(tmp_path / "b")
    assert again.id == b.id and again.id.startswith("test-")
    w = random_weights(6, 2, reset_after=False)
    for key, arr in w.as_dict().items():
        np.testing.assert_array_equal(again.weights.as_dict()[key], arr)
    assert again.manifest.sample_period_s == 60.0
    assert again.manifest.features == ("f0", "f1")
    assert again.manifest.network == Network(2, (GRULayer(6, reset_after=False), DenseLayer(1)))
    assert json.loads((tmp_path / "b" / MANIFEST).read_text())["format_version"] == 2


def test_a_stack_round_trips_with_its_layer_list(tmp_path: Path) -> None:
    net = Network(3, (GRULayer(7), GRULayer(5, reset_after=False), DenseLayer(4, "relu"), DenseLayer(3, "tanh")))
    b = make_bundle(tmp_path / "b", network=net, seed=4)
    again = load_bundle(tmp_path / "b")
    assert again.manifest.network == net and again.id == b.id
    assert (again.manifest.state_size, again.manifest.horizon) == (12, 3)
    layers = json.loads((tmp_path / "b" / MANIFEST).read_text())["architecture"]["layers"]
    assert layers[1] == {"type": "gru", "units": 5, "reset_after": False}
    assert layers[2] == {"type": "dense", "units": 4, "activation": "relu"}
    for key, arr in b.weights.as_dict().items():
        np.testing.assert_array_equal(again.weights.as_dict()[key], arr)


def _as_format_1(bundle_dir: Path) -> None:
    """Rewrite a one-GRU + Dense(1) bundle in format 1, as edge-gru wrote bundles before layer lists."""
    data = json.loads((bundle_dir / MANIFEST).read_text())
    gru = data["architecture"]["layers"][0]
    data["format_version"] = 1
    data["architecture"] = {
        "cell": "gru",
        "units": gru["units"],
        "input_features": data["architecture"]["input_features"],
        "window": data["architecture"]["window"],
        "reset_after": gru["reset_after"],
        "activation": "tanh",
        "recurrent_activation": "sigmoid",
        "head": "dense1",
    }
    with np.load(bundle_dir / WEIGHTS) as npz:
        arrays = {k: npz[k] for k in npz.files}
    old = {
        "kernel": arrays["layers.0.kernel"],
        "recurrent_kernel": arrays["layers.0.recurrent_kernel"],
        "bias": arrays["layers.0.bias"],
        "dense_kernel": arrays["layers.1.kernel"],
        "dense_bias": arrays["layers.1.bias"],
    }
    (bundle_dir / MANIFEST).write_text(json.dumps(data))
    _replace_weights(bundle_dir, old)


def test_format_1_bundles_migrate_on_read_and_forecast_the_same(tmp_path: Path) -> None:
    new = make_bundle(tmp_path / "new", units=6, reset_after=False)
    shutil.copytree(tmp_path / "new", tmp_path / "old")
    _as_format_1(tmp_path / "old")
    old = load_bundle(tmp_path / "old")
    assert old.manifest.network == new.manifest.network
    assert old.id == new.id  # the id of a one-GRU + Dense(1) bundle does not depend on the format
    x = np.random.default_rng(0).normal(10, 2, (4, 9, 1))
    np.testing.assert_array_equal(
        edge_gru.load(tmp_path / "old", "numpy").predict(x), edge_gru.load(tmp_path / "new", "numpy").predict(x)
    )


def test_the_shipped_default_bundle_loads_unchanged() -> None:
    """models/default is format 1: it loads as [GRU(50), Dense(1)] with the id it was shipped with."""
    root = Path(__file__).resolve().parent.parent / "models" / "default"
    raw = json.loads((root / MANIFEST).read_text())
    b = load_bundle(root)
    assert raw["format_version"] == 1 and b.id == raw["id"]
    assert b.manifest.network == Network(1, (GRULayer(50), DenseLayer(1)))


def test_id_changes_with_weights(tmp_path: Path) -> None:
    a = make_bundle(tmp_path / "a", seed=1)
    b = make_bundle(tmp_path / "b", seed=2)
    c = make_bundle(tmp_path / "c", seed=1)
    assert a.id != b.id
    assert a.id == c.id


def test_wrong_checksum_names_the_file(tmp_path: Path) -> None:
    make_bundle(tmp_path / "b")
    weights = tmp_path / "b" / WEIGHTS
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"weights\.npz: sha256 .* does not match manifest\.json"):
        load_bundle(tmp_path / "b")


def test_missing_file(tmp_path: Path) -> None:
    make_bundle(tmp_path / "b")
    (tmp_path / "b" / WEIGHTS).unlink()
    with pytest.raises(BundleError, match=r"weights\.npz: listed in manifest\.json but missing"):
        load_bundle(tmp_path / "b")


def test_missing_manifest_and_not_a_directory(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match=r"manifest\.json: missing"):
        load_bundle(tmp_path / "empty")
    with pytest.raises(BundleError, match="not a bundle directory"):
        load_bundle(tmp_path / "nowhere")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("format_version", 99, "format_version"),
        ("format", "something-else", "'format'"),
        ("mode", "batch", "'mode'"),
        ("architecture.layers", [], "architecture.layers"),
        ("architecture.layers.0.units", 0, r"architecture.layers\[0\].units"),
        ("architecture.layers.0.units", "50", r"architecture.layers\[0\].units"),
        ("architecture.layers.0.reset_after", "yes", r"architecture.layers\[0\].reset_after"),
        ("architecture.layers.0.type", "lstm", r"architecture.layers\[0\].type"),
        ("architecture.layers.1.activation", "swish", r"architecture.layers\[1\].activation"),
        ("architecture.layers.1", {"type": "gru", "units": 3}, "the last layer must be a dense layer"),
        ("architecture.layers.0", {"type": "dense", "units": 3}, "the first layer must be a gru layer"),
        ("target", "humidity", "'target'"),
        ("normalization.kind", "minmax", "normalization"),
        ("normalization.input_std", [0.0], "input_std"),
        ("sample_period_s", -5, "sample_period_s"),
        ("files", {"../../etc/passwd": "00"}, "not a plain file name"),
    ],
)
def test_bad_manifest_fields_are_named(tmp_path: Path, field: str, value: object, message: str) -> None:
    make_bundle(tmp_path / "b")
    _rewrite_manifest(tmp_path / "b", **{field: value})
    with pytest.raises(BundleError, match=message):
        load_bundle(tmp_path / "b")


def test_manifest_not_json(tmp_path: Path) -> None:
    make_bundle(tmp_path / "b")
    (tmp_path / "b" / MANIFEST).write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(tmp_path / "b")


def _replace_weights(bundle_dir: Path, arrays: dict[str, np.ndarray] | bytes) -> None:
    path = bundle_dir / WEIGHTS
    if isinstance(arrays, bytes):
        path.write_bytes(arrays)
    else:
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        path.write_bytes(buf.getvalue())
    data = json.loads((bundle_dir / MANIFEST).read_text())
    data["files"][WEIGHTS] = sha256_file(path)
    (bundle_dir / MANIFEST).write_text(json.dumps(data))


def test_shapes_that_disagree_with_the_manifest(tmp_path: Path) -> None:
    make_bundle(tmp_path / "b", units=8)
    _replace_weights(tmp_path / "b", random_weights(9, 1).as_dict())
    with pytest.raises(BundleError, match=r"'layers\.0\.kernel' has shape"):
        load_bundle(tmp_path / "b")
    _as_format_1(tmp_path / "b")  # format-1 arrays of another size than the manifest's
    _replace_weights(
        tmp_path / "b",
        {
            k.split(".")[-1] if k.startswith("layers.0") else ("dense_" + k.split(".")[-1]): v
            for k, v in random_weights(9, 1).as_dict().items()
        },
    )
    with pytest.raises(BundleError, match=r"do not match manifest\.json field 'architecture'"):
        load_bundle(tmp_path / "b")


def test_inconsistent_array_shapes(tmp_path: Path) -> None:
    make_bundle(tmp_path / "b", units=8)
    arrays = random_weights(8, 1).as_dict()
    arrays["layers.0.recurrent_kernel"] = arrays["layers.0.recurrent_kernel"][:, :10]
    _replace_weights(tmp_path / "b", arrays)
    with pytest.raises(BundleError, match=r"'layers\.0\.recurrent_kernel' has shape"):
        load_bundle(tmp_path / "b")


def test_missing_array_and_wrong_dtype(tmp_path: Path) -> None:
    make_bundle(tmp_path / "b", units=8)
    arrays = random_weights(8, 1).as_dict()
    del arrays["layers.1.bias"]
    _replace_weights(tmp_path / "b", arrays)
    with pytest.raises(BundleError, match=r"missing array.*layers\.1\.bias"):
        load_bundle(tmp_path / "b")
    arrays = random_weights(8, 1).as_dict()
    arrays["layers.0.kernel"] = arrays["layers.0.kernel"].astype(np.float64)
    _replace_weights(tmp_path / "b", arrays)
    with pytest.raises(BundleError, match=r"'layers\.0\.kernel' has dtype float64"):
        load_bundle(tmp_path / "b")


def test_nan_weights_are_refused(tmp_path: Path) -> None:
    make_bundle(tmp_path / "b", units=8)
    arrays = random_weights(8, 1).as_dict()
    arrays["layers.0.bias"][0, 3] = np.nan
    _replace_weights(tmp_path / "b", arrays)
    with pytest.raises(BundleError, match=r"'layers\.0\.bias' contains NaN"):
        load_bundle(tmp_path / "b")


class _Boom:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("pickle executed",))


def test_pickled_object_in_weights_is_never_loaded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_bundle(tmp_path / "b", units=8)
    arrays: dict[str, np.ndarray] = dict(random_weights(8, 1).as_dict())
    arrays["layers.0.kernel"] = np.array([_Boom()], dtype=object)
    _replace_weights(tmp_path / "b", arrays)
    with pytest.raises(BundleError, match="cannot read weights"):
        load_bundle(tmp_path / "b")
    assert "pickle executed" not in capsys.readouterr().out
    # A raw pickle renamed to weights.npz is refused too.
    _replace_weights(tmp_path / "b", pickle.dumps(_Boom()))
    with pytest.raises(BundleError, match="cannot read weights"):
        load_bundle(tmp_path / "b")
    assert "pickle executed" not in capsys.readouterr().out


def test_truncated_weights(tmp_path: Path) -> None:
    make_bundle(tmp_path / "b", units=8)
    data = (tmp_path / "b" / WEIGHTS).read_bytes()
    _replace_weights(tmp_path / "b", data[: len(data) // 2])
    with pytest.raises(BundleError, match="cannot read weights"):
        load_bundle(tmp_path / "b")


def test_copied_bundle_loads_and_serves(tmp_path: Path) -> None:
    make_bundle(tmp_path / "b")
    shutil.copytree(tmp_path / "b", tmp_path / "copy")
    model = edge_gru.load(tmp_path / "copy", backend="numpy")
    assert model.predict(np.full((2, 5, 1), 10.0)).shape == (2,)


def test_id_covers_the_tflite_step_models(tmp_path: Path) -> None:
    """Re-calibrating the int8 step model with unchanged weights must give a new id."""
    from edge_gru.bundle import STEP_INT8, write_bundle

    base = make_bundle(tmp_path / "a")
    one = write_bundle(tmp_path / "b", base.manifest, base.weights, {STEP_INT8: b"calibration one"})
    two = write_bundle(tmp_path / "c", base.manifest, base.weights, {STEP_INT8: b"calibration two"})
    again = write_bundle(tmp_path / "d", base.manifest, base.weights, {STEP_INT8: b"calibration one"})
    assert len({base.id, one.id, two.id}) == 3
    assert one.id == again.id
    report = write_bundle(tmp_path / "e", base.manifest, base.weights, {"metrics.json": b"{}"})
    assert report.id == base.id  # a report does not change what the model forecasts
