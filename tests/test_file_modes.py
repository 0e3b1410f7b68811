"""File modes: what other users read is 0644 (bundles, C exports), the daemon's checkpoint stays 0600.

A bundle trained or exported by one user is copied into place for the ``DynamicUser=yes``
service, which runs as a user of its own: a 0600 file there is unreadable to it. The
checkpoint holds the streams' state, which only the service itself reads.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

import edge_gru
from edge_gru.cli import main
from edge_gru.daemon.checkpoint import Checkpointer
from tests.bundles import make_bundle


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def modes(directory: Path) -> dict[str, int]:
    return {p.name: stat.S_IMODE(p.stat().st_mode) for p in directory.iterdir() if p.is_file()}


def test_bundle_files_are_world_readable(tmp_path: Path, umask_022: None) -> None:
    bundle = make_bundle(tmp_path / "b")
    found = modes(bundle.path)
    assert {"manifest.json", "weights.npz"} <= set(found)
    assert found == dict.fromkeys(found, 0o644)
    # Rewriting a bundle in place (train --force) leaves the same modes, and no temporary behind.
    make_bundle(tmp_path / "b", seed=1)
    assert modes(bundle.path) == found


def test_exported_c_files_are_world_readable(tmp_path: Path, umask_022: None) -> None:
    bundle = make_bundle(tmp_path / "b")
    res = CliRunner().invoke(main, ["export-c", str(bundle.path), "--out", str(tmp_path / "c")])
    assert res.exit_code == 0, res.output
    found = modes(tmp_path / "c")
    assert any(name.endswith(".c") for name in found) and any(name.endswith(".h") for name in found)
    assert found == dict.fromkeys(found, 0o644)


def test_checkpoint_stays_private(tmp_path: Path, umask_022: None) -> None:
    model = edge_gru.load(make_bundle(tmp_path / "b").path, backend="numpy")
    pool = model.pool(4)
    pool.update(["a", "b"], [1.0, 2.0], timestamps=[0.0, 0.0])
    checkpoint = Checkpointer(tmp_path / "state" / "node.checkpoint.npz")
    assert checkpoint.save(pool)
    assert stat.S_IMODE(checkpoint.path.stat().st_mode) == 0o600
    assert [p.name for p in checkpoint.path.parent.iterdir()] == [checkpoint.path.name]


def test_the_umask_still_applies(tmp_path: Path) -> None:
    """A user who asked for private files (umask 077) gets them: 0644 is an upper bound, as for any program."""
    old = os.umask(0o077)
    try:
        bundle = make_bundle(tmp_path / "b")
    finally:
        os.umask(old)
    found = modes(bundle.path)
    assert found == dict.fromkeys(found, 0o600)
