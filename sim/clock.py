"""The simulator's clock: virtual (as fast as possible) by default, or paced against the wall.

Readings carry their own simulated timestamps either way; the clock only decides *when*
each tick is sent. ``speed=None`` sends the next tick as soon as the daemon has handled
the last one; ``speed=1`` (``--realtime``) sends a reading stamped one minute later one
minute later; ``speed=60`` plays an hour of readings per minute.

>>> c = SimClock(speed=None)
>>> c.wait_until(3600.0)   # returns at once on the virtual clock
>>> c.now
3600.0
"""

from __future__ import annotations

import time
from collections.abc import Callable

from edge_gru.errors import ConfigError


class SimClock:
    """Maps simulated seconds since the run's start onto the wall clock."""

    def __init__(
        self,
        *,
        speed: float | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if speed is not None and not speed > 0:
            raise ConfigError(f"speed must be > 0 (1 = real time), got {speed!r}")
        self.speed = speed
        self._monotonic = monotonic
        self._sleep = sleep
        self._start = monotonic()
        self.now = 0.0  # simulated seconds since the start

    @property
    def virtual(self) -> bool:
        return self.speed is None

    def start(self) -> None:
        self._start = self._monotonic()
        self.now = 0.0

    def wait_until(self, elapsed: float) -> None:
        """Block until simulated time ``elapsed`` is due (at once on the virtual clock)."""
        if self.speed is not None:
            due = self._start + elapsed / self.speed
            delay = due - self._monotonic()
            if delay > 0:
                self._sleep(delay)
        self.now = max(self.now, elapsed)
