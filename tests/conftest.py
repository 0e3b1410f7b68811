"""Shared fixtures: a real mosquitto per test session, unique topics, small real bundles.

The brokers, daemon processes and MQTT clients themselves live in ``edge_gru.harness``.
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_gru.harness import DEFAULT_MODEL, ROOT, Broker

__all__ = ["DATA", "DEFAULT_MODEL", "ROOT"]
DATA = Path(__file__).resolve().parent / "data"

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """A mosquitto for the whole session. Tests that stop or restart a broker use ``private_broker``."""
    b = Broker(tmp_path_factory.mktemp("mosquitto")).start()
    yield b
    b.stop()


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[Broker]:
    """A mosquitto this test may stop, kill and restart (same port, same persistence)."""
    b = Broker(tmp_path / "mosquitto").start()
    yield b
    b.stop()


_counter = itertools.count()


@pytest.fixture
def topic_prefix() -> str:
    """A topic root no other test uses: ``t<uuid>-<n>``."""
    return f"t{uuid.uuid4().hex[:8]}-{next(_counter)}"
