"""Backends run the GRU step on normalized inputs; the pool owns all state around them.

Every backend implements :class:`Backend`, so the pool, the daemon and the simulator work
the same with any of them, and one test suite runs over all (``tests/test_backends.py``).
Heavy runtimes are imported only when their backend is created.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge_gru.backends.base import Backend
from edge_gru.errors import BackendUnavailableError

if TYPE_CHECKING:
    from edge_gru.bundle import Bundle

BACKENDS = ("numba", "numpy", "tflite", "tflite-int8")

__all__ = ["BACKENDS", "Backend", "create_backend"]


def create_backend(name: str, bundle: Bundle) -> Backend:
    """Instantiate backend ``name`` for ``bundle``; unknown names and missing runtimes raise clearly."""
    if name == "numpy":
        from edge_gru.backends.numpy_backend import NumpyBackend

        return NumpyBackend(bundle)
    if name == "numba":
        from edge_gru.backends.numba_backend import NumbaBackend

        return NumbaBackend(bundle)
    if name in ("tflite", "tflite-int8"):
        try:
            from edge_gru.backends.tflite_backend import TFLiteBackend
        except ImportError as exc:
            raise BackendUnavailableError(f"backend {name!r} is not available in this build ({exc})") from exc
        return TFLiteBackend(bundle, int8=name == "tflite-int8")
    raise BackendUnavailableError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
