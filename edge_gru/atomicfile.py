"""Crash-safe file replacement: a reader sees the old file or the new one, never a torn one."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

#: Permission bits (before the umask) of files other users and services read: bundles, C exports.
PUBLIC = 0o644
#: Of files only their owner reads: daemon checkpoints (stream state; the service's user alone reads them).
PRIVATE = 0o600


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], object], *, mode: int = PRIVATE) -> None:
    """Write through ``write(fh)`` into a temporary file beside ``path``, fsync, rename, fsync dir.

    The rename is atomic on POSIX file systems, and the directory fsync makes the rename
    itself survive a power cut (a checkpoint that vanishes after a reboot is a lost state).
    The file gets ``mode`` less the umask, like any file a program creates: :data:`PUBLIC`
    for what another user must read (a bundle copied in for a ``DynamicUser=yes`` service),
    :data:`PRIVATE`, the default, for state.
    """
    target = Path(path)
    fd, tmp = _create_temporary(target, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:
        dir_fd = os.open(target.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def _create_temporary(target: Path, mode: int) -> tuple[int, str]:
    """An exclusive new file ``.<name>.<random>.tmp`` beside ``target`` (the name checkpoint cleanup looks for)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = str(target.parent / f".{target.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, flags, mode), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"{target.parent}: no free temporary file name for {target.name}")
