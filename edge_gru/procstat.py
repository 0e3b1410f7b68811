"""Memory of a process from Linux ``/proc``: the stats topic, the tests and the benchmarks read it here."""

from __future__ import annotations

import os


def rss_bytes(pid: int | str = "self") -> int:
    """Resident set size of ``pid`` (default: this process); 0 where /proc is unavailable."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def memory_mib(pid: int | str = "self") -> dict[str, float]:
    """``{"VmRSS": ..., "VmHWM": ...}`` (current and peak resident size) in MiB; empty where unavailable."""
    out: dict[str, float] = {}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    out[key] = int(value.split()[0]) / 1024
    except (OSError, ValueError, IndexError):
        return {}
    return out
