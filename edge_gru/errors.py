"""The exception hierarchy: one base class so callers can catch everything edge-gru raises."""

from __future__ import annotations


class EdgeGruError(Exception):
    """Base class of every error raised by edge-gru."""


class BundleError(EdgeGruError):
    """A model bundle is missing, corrupt, or does not match its manifest."""


class CheckpointError(EdgeGruError):
    """A state checkpoint cannot be read or does not belong to the loaded bundle."""


class KernelCacheError(EdgeGruError):
    """Numba cannot write its compilation cache (set ``NUMBA_CACHE_DIR``)."""


class BackendUnavailableError(EdgeGruError):
    """The requested backend's runtime (numba, LiteRT, TensorFlow) is not installed."""


class MissingExtraError(BackendUnavailableError):
    """A feature needs an optional extra that this install lacks (a device install has no TensorFlow).

    The message is one line naming the extra and the pip command, so the command line can print
    it as it is (exit status 2) instead of a traceback ending in ``ModuleNotFoundError``.
    """

    def __init__(self, what: str, extra: str, *, module: str | None = None) -> None:
        self.what, self.extra, self.module = what, extra, module
        missing = f" (no module {module!r})" if module else ""
        super().__init__(f"{what} needs the '{extra}' extra{missing}: pip install 'edge-gru[{extra}]'")


class ConfigError(EdgeGruError):
    """A daemon or simulator configuration value is missing or invalid."""


class PayloadError(EdgeGruError):
    """An MQTT payload cannot be turned into a reading."""


class DataError(EdgeGruError):
    """A CSV or series cannot be used (missing column, non-numeric values, too short)."""
