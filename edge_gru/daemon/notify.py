"""systemd ``Type=notify`` protocol over ``$NOTIFY_SOCKET``, without libsystemd.

The protocol is one datagram per message to a unix socket whose path is in
``$NOTIFY_SOCKET`` (a leading ``@`` means the abstract namespace). ``WATCHDOG=1`` must
come every ``$WATCHDOG_USEC`` microseconds or systemd restarts the service; the daemon
sends it from the worker loop, so a stuck worker (not just a live process) trips it.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Mapping

from edge_gru.daemon.logs import event

log = logging.getLogger(__name__)


class Notifier:
    """Sends sd_notify messages; every method is a no-op when not run under systemd."""

    def __init__(self, address: str | None, *, watchdog_usec: int | None = None) -> None:
        self.address = address
        self.watchdog_interval_s = watchdog_usec / 1e6 / 2 if watchdog_usec else None
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._last_watchdog = 0.0
        self._failed = False
        if address:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._target = "\0" + address[1:] if address.startswith("@") else address

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        """From ``$NOTIFY_SOCKET`` and ``$WATCHDOG_USEC`` (honouring ``$WATCHDOG_PID``)."""
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET") or None
        usec = None
        raw = env.get("WATCHDOG_USEC")
        pid = env.get("WATCHDOG_PID")
        if raw and (not pid or pid == str(os.getpid())):
            try:
                usec = int(raw) or None
            except ValueError:
                event(log, logging.WARNING, "watchdog_usec_invalid", value=raw)
        return cls(address, watchdog_usec=usec)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def send(self, *lines: str) -> bool:
        """Send one datagram of ``KEY=value`` lines; failures are logged once, never raised."""
        if self._sock is None:
            return False
        data = "\n".join(lines).encode()
        try:
            with self._lock:
                self._sock.sendto(data, self._target)
        except OSError as exc:
            if not self._failed:
                self._failed = True
                event(log, logging.WARNING, "sd_notify_failed", socket=self.address, detail=str(exc))
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={text}")

    def stopping(self) -> bool:
        return self.send("STOPPING=1")

    def reloading(self) -> bool:
        """``RELOADING=1`` with the monotonic time that ``Type=notify-reload`` (systemd >= 253) expects."""
        return self.send("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")

    def watchdog(self, *, force: bool = False) -> bool:
        """``WATCHDOG=1`` at most every half ``$WATCHDOG_USEC`` (cheap to call on every loop)."""
        if self.watchdog_interval_s is None:
            return False
        now = time.monotonic()
        if not force and now - self._last_watchdog < self.watchdog_interval_s:
            return False
        self._last_watchdog = now
        return self.send("WATCHDOG=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
