"""Stream state on disk: restored at start, saved atomically every N seconds and on shutdown.

``pool.save`` writes a temporary file, fsyncs and renames it, so a checkpoint survives
``kill -9`` and power cuts as the old or the new file. A state directory that is
read-only or full must not stop forecasting: the failure is logged and retried.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from edge_gru.daemon.logs import event
from edge_gru.errors import CheckpointError
from edge_gru.pool import StreamPool

log = logging.getLogger(__name__)


class Checkpointer:
    """Saves and restores one pool at ``path``."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.saves = 0
        self.failures = 0
        self.last_saved: float | None = None
        self._failing = False

    def restore(self, pool: StreamPool) -> bool:
        """Load the checkpoint into ``pool`` if it exists and belongs to the pool's bundle.

        A checkpoint of another bundle (or an unreadable one) is renamed to ``*.discarded``
        with a warning, so the next save does not silently overwrite the evidence.
        """
        self._remove_stale_temporaries()
        if not self.path.exists():
            event(log, logging.INFO, "checkpoint_none", path=str(self.path))
            return False
        try:
            pool.load(self.path)
        except CheckpointError as exc:
            discarded = self.path.with_name(self.path.name + ".discarded")
            try:
                os.replace(self.path, discarded)
            except OSError:
                discarded = self.path
            event(
                log,
                logging.WARNING,
                "checkpoint_discarded",
                path=str(self.path),
                moved_to=str(discarded),
                reason=str(exc),
            )
            return False
        except OSError as exc:
            event(log, logging.WARNING, "checkpoint_unreadable", path=str(self.path), reason=str(exc))
            return False
        event(log, logging.INFO, "checkpoint_restored", path=str(self.path), streams=len(pool), bundle=pool.model.id)
        return True

    def _remove_stale_temporaries(self) -> None:
        """Delete temporary files of saves a crash interrupted (``.<name>.*.tmp``, see atomic_write)."""
        try:
            stale = list(self.path.parent.glob(f".{self.path.name}.*.tmp"))
        except OSError:
            return
        for tmp in stale:
            try:
                tmp.unlink()
            except OSError:
                continue
            event(log, logging.INFO, "checkpoint_stale_temporary_removed", path=str(tmp))

    def save(self, pool: StreamPool) -> bool:
        """Write the pool's state; on failure log (once per failure streak) and return False."""
        start = time.perf_counter()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            pool.save(self.path)
        except OSError as exc:
            self.failures += 1
            if not self._failing:
                event(
                    log,
                    logging.WARNING,
                    "checkpoint_failed",
                    path=str(self.path),
                    reason=exc.strerror or str(exc),
                    hint="make the state directory writable (StateDirectory= in the unit); serving continues",
                )
            self._failing = True
            return False
        if self._failing:
            event(log, logging.INFO, "checkpoint_recovered", path=str(self.path), failures=self.failures)
        self._failing = False
        self.saves += 1
        self.last_saved = time.time()
        event(
            log,
            logging.DEBUG,
            "checkpoint_saved",
            path=str(self.path),
            streams=len(pool),
            ms=round((time.perf_counter() - start) * 1e3, 2),
        )
        return True
