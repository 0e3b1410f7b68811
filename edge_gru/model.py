"""A loaded bundle bound to a backend: batch prediction and stream pools."""

from __future__ import annotations

import logging
import os

import numpy as np

from edge_gru.adaptation import AdaptationSpec
from edge_gru.backends import Backend, create_backend
from edge_gru.bundle import Bundle, Manifest, load_bundle
from edge_gru.errors import BackendUnavailableError
from edge_gru.normalization import StreamNormalizer
from edge_gru.pool import DEFAULT_MAX_ABS_VALUE, DEFAULT_MAX_ID_BYTES, DEFAULT_MAX_STREAMS, StreamPool

log = logging.getLogger(__name__)


class Model:
    """A bundle and the backend that runs it."""

    def __init__(self, bundle: Bundle, backend: Backend) -> None:
        self.bundle = bundle
        self.backend = backend

    @property
    def id(self) -> str:
        return self.bundle.id

    @property
    def manifest(self) -> Manifest:
        return self.bundle.manifest

    @property
    def backend_name(self) -> str:
        return self.backend.name

    def __repr__(self) -> str:
        m = self.manifest
        return (
            f"Model(id={self.id!r}, backend={self.backend_name!r}, mode={m.mode!r}, "
            f"network={m.network.describe()!r}, inputs={m.input_features}, window={m.window})"
        )

    def predict(self, windows: np.ndarray) -> np.ndarray:
        """Forecast the samples after each window: (N, W, I) raw units -> raw units, like Keras ``predict``.

        Returns (N,) for a one-step network, (N, horizon) for a Dense(k) head. Each window runs
        from a zero state. With causal normalization each window is
        normalized as a stream that has seen only that window would be.
        """
        x = np.asarray(windows, dtype=np.float64)
        if x.ndim == 2 and self.manifest.input_features == 1:
            x = x[:, :, None]
        if x.ndim != 3 or x.shape[2] != self.manifest.input_features:
            raise ValueError(f"windows has shape {np.shape(windows)}; expected (N, W, {self.manifest.input_features})")
        n, w, _ = x.shape
        norm = StreamNormalizer(self.manifest.normalization, x.shape[2], self.manifest.target_index)
        norm.grow(n)
        rows = np.arange(n)
        z = np.empty(x.shape, dtype=np.float32)
        for t in range(w):
            z[:, t, :] = norm.transform(rows, x[:, t, :])
        y = self.backend.run_windows(z)
        if self.manifest.horizon == 1:
            return norm.denormalize(rows, y[:, 0])
        return np.stack([norm.denormalize(rows, y[:, k]) for k in range(y.shape[1])], axis=1)

    def warm_up(self) -> np.ndarray:
        """Run the serving path once from a zero state and return the network's output (1,).

        The first call of a backend compiles its numba kernels (seconds, once per machine,
        then cached) or loads them from numba's cache, or allocates an interpreter; done here,
        that cost is neither the first reading's latency nor part of a throughput figure.
        Stateful models serve through ``step`` only, so the windows kernel (and its memory)
        stays out of a daemon that does not need it.
        """
        m = self.manifest
        if self.backend.name == "numba" and getattr(self.backend, "kernel_kind", "") == "jit":
            # the pool runs the adaptation compiled beside the JIT kernels (whether the bundle or a
            # config turns it on): its loops compile here too
            from edge_gru.adaptation import AdaptationSpec, Adapter

            Adapter(AdaptationSpec()).warm_up()
        if m.mode == "stateful":
            h = np.zeros((1, m.state_size), np.float32)
            return self.backend.step(np.zeros((1, m.input_features), np.float32), h, np.zeros(1, np.int64))
        return self.backend.run_windows(np.zeros((1, max(m.window, 1), m.input_features), np.float32))

    def pool(
        self,
        max_streams: int = DEFAULT_MAX_STREAMS,
        *,
        idle_timeout_s: float | None = None,
        use_receive_time: bool = False,
        max_abs_value: float = DEFAULT_MAX_ABS_VALUE,
        max_id_bytes: int = DEFAULT_MAX_ID_BYTES,
        adaptation: AdaptationSpec | None = None,
    ) -> StreamPool:
        """A pool of per-stream states for serving this model sample by sample (rules: ``docs/pool-rules.md``).

        ``adaptation`` overrides the bundle's (see :mod:`edge_gru.adaptation`); None keeps it.
        """
        return StreamPool(
            self,
            max_streams,
            idle_timeout_s=idle_timeout_s,
            use_receive_time=use_receive_time,
            max_abs_value=max_abs_value,
            max_id_bytes=max_id_bytes,
            adaptation=adaptation,
        )


def load(path: str | os.PathLike[str], backend: str = "auto") -> Model:
    """Load a bundle directory and bind it to ``backend``.

    ``backend``: ``numba``, ``numpy``, ``tflite``, ``tflite-int8``, or ``auto`` (numba when
    installed, else numpy).
    """
    bundle = load_bundle(path)
    if backend == "auto":
        try:
            return Model(bundle, create_backend("numba", bundle))
        except BackendUnavailableError as exc:
            log.warning("numba backend unavailable (%s); using the numpy backend", exc)
            backend = "numpy"
    return Model(bundle, create_backend(backend, bundle))
