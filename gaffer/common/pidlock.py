"""An exclusive lock file that names its holder: one daemon per data dir, per socket.

``flock`` is released by the kernel when the holder dies (even by SIGKILL), so a stale lock
file never blocks a restart; the holder's pid is written in it so the refusal can say who holds
it.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from gaffer.common.errors import LockHeld

__all__ = ["LockHeld", "hold"]


def hold(path: Path) -> int:
    """An fd holding an exclusive lock on ``path`` (created 0600, our pid written in).

    Raises LockHeld when another process has it, OSError when the file cannot be opened or
    locked at all.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        os.close(fd)
        raise LockHeld(f"process {holder}" if holder.isdecimal() else "another process") from None
    except OSError:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
