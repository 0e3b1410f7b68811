"""edge-gru: one-step-ahead GRU forecasts for sensor streams on small devices.

Importing this package is cheap: numba, LiteRT and TensorFlow load only when a backend or
the trainer that needs them is used.
"""

from edge_gru.bundle import Bundle, load_bundle
from edge_gru.errors import (
    BackendUnavailableError,
    BundleError,
    CheckpointError,
    ConfigError,
    DataError,
    EdgeGruError,
    KernelCacheError,
    MissingExtraError,
    PayloadError,
)
from edge_gru.model import Model, load
from edge_gru.pool import PoolResult, Status, StreamPool

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailableError",
    "Bundle",
    "BundleError",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "EdgeGruError",
    "KernelCacheError",
    "MissingExtraError",
    "Model",
    "PayloadError",
    "PoolResult",
    "Status",
    "StreamPool",
    "__version__",
    "load",
    "load_bundle",
]
