"""A kernel pipe between a socket and a file, for bytes that never enter Python.

``splice(2)`` moves a socket's received pages into a pipe without copying them, and from the
pipe into the file's page cache with one copy: no copy into user space and back out, and
the interpreter never sees the bytes (nothing is hashed on the way: the engine hashes
behind the writers, from the page cache).

Linux only; elsewhere, or when a pipe cannot be made large enough (the per-user pipe
budget is spent), bytes go through memory buffers instead.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
from typing import Final

__all__ = ["PIPE_SIZE", "SplicePipe", "splicing_available"]

PIPE_SIZE: Final = 1024 * 1024
# Below this a pipe is not worth it: each round trip through it costs two system calls.
_MIN_PIPE_SIZE: Final = 256 * 1024
_F_SETPIPE_SZ: Final = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_F_GETPIPE_SZ: Final = getattr(fcntl, "F_GETPIPE_SZ", 1032)
_FROM_SOCKET: Final = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)


def splicing_available() -> bool:
    return sys.platform == "linux" and hasattr(os, "splice")


class SplicePipe:
    """One pipe of about ``size`` bytes; raises OSError when that cannot be had."""

    __slots__ = ("capacity", "read_end", "write_end")

    def __init__(self, size: int = PIPE_SIZE) -> None:
        self.read_end, self.write_end = os.pipe2(os.O_CLOEXEC)
        try:
            # Over the system's or the user's pipe limit, take what the pipe has.
            with contextlib.suppress(OSError):
                fcntl.fcntl(self.write_end, _F_SETPIPE_SZ, size)
            self.capacity: int = fcntl.fcntl(self.write_end, _F_GETPIPE_SZ)
            if self.capacity < _MIN_PIPE_SIZE:
                raise OSError(f"pipes of only {self.capacity} bytes")
        except OSError:
            self.close()
            raise

    def fill_from(self, sock: int, most: int) -> int:
        """Move up to ``most`` bytes from the socket ``sock`` into the (empty) pipe.

        Returns 0 at the socket's end; raises BlockingIOError when it has nothing to read.
        """
        return os.splice(sock, self.write_end, min(most, self.capacity), flags=_FROM_SOCKET)

    def close(self) -> None:
        for fd in (self.read_end, self.write_end):
            if fd >= 0:
                os.close(fd)
        self.read_end = self.write_end = -1
