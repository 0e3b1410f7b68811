"""Backends run the GRU step on normalized inputs; the pool owns all state around them.

Every backend implements :class:`Backend`, so the pool, the daemon and the simulator work
the same with any of them, and one test suite runs over all (``tests/test_backends.py``).
:data:`BACKENDS` is the one registry of their names: the config's and the CLI's choices,
``edge-gru bench`` and the tests read it. Heavy runtimes are imported only when their
backend is created.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from edge_gru.backends.base import Backend
from edge_gru.errors import BackendUnavailableError

if TYPE_CHECKING:
    from edge_gru.bundle import Bundle


@dataclass(frozen=True)
class BackendEntry:
    """How to make one backend, and what it needs installed."""

    factory: Callable[[Bundle], Backend]
    runtime: str | None  # the importable module the backend needs beyond numpy
    variants: tuple[str, ...] = ()  # kernel kinds ``edge-gru bench`` measures separately

    def installed(self) -> bool:
        return self.runtime is None or importlib.util.find_spec(self.runtime) is not None


def _numba(bundle: Bundle) -> Backend:
    from edge_gru.backends.numba_backend import NumbaBackend

    return NumbaBackend(bundle)


def _numpy(bundle: Bundle) -> Backend:
    from edge_gru.backends.numpy_backend import NumpyBackend

    return NumpyBackend(bundle)


def _tflite(int8: bool) -> Callable[[Bundle], Backend]:
    def make(bundle: Bundle) -> Backend:
        try:
            from edge_gru.backends.tflite_backend import TFLiteBackend
        except ImportError as exc:
            name = "tflite-int8" if int8 else "tflite"
            raise BackendUnavailableError(f"backend {name!r} is not available in this build ({exc})") from exc
        return TFLiteBackend(bundle, int8=int8)

    return make


BACKENDS: dict[str, BackendEntry] = {
    "numba": BackendEntry(_numba, "numba", variants=("jit", "aot")),
    "numpy": BackendEntry(_numpy, None),
    "tflite": BackendEntry(_tflite(False), "ai_edge_litert"),
    "tflite-int8": BackendEntry(_tflite(True), "ai_edge_litert"),
}
AUTO = "auto"  # numba when installed, else numpy (edge_gru.load)
BACKEND_CHOICES: tuple[str, ...] = (AUTO, *BACKENDS)
# The network rebuilt in Keras (edge_gru.train.keras_backend): a reference for evaluate and bench, never served.
KERAS_REFERENCE = "keras"

__all__ = ["AUTO", "BACKENDS", "BACKEND_CHOICES", "KERAS_REFERENCE", "Backend", "BackendEntry", "create_backend"]


def create_backend(name: str, bundle: Bundle) -> Backend:
    """Instantiate backend ``name`` for ``bundle``; unknown names and missing runtimes raise clearly."""
    entry = BACKENDS.get(name)
    if entry is None:
        raise BackendUnavailableError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    return entry.factory(bundle)
