"""How far an upload's running SHA-256 may trail the bytes written before writers wait.

The hash reads back what was written from the page cache; receiving goes on without it
until it trails by this much. Further behind, bytes may have left the page cache and be
read back from the disk. Memory the system has to spare keeps more of them cached, so the
bound grows with it: a share of the available memory (divided among the uploads being
written), capped, and never below the floor the fsync policy needs (recording, which the
hash waits for, trails writing by ``sync_every``: less than twice that would make
hashing and receiving take turns).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["HashLag", "available_memory"]

# A share of the available memory all uploads' trailing bytes may take together.
MEMORY_SHARE = 1 / 16
# No upload trails by more than this: what it trails by is hashed after its last byte.
MAX_LAG = 1024 * 1024 * 1024
# The available memory is looked up at most this often (seconds).
REFRESH = 1.0

MEMINFO = Path("/proc/meminfo")


def available_memory(meminfo: Path = MEMINFO) -> int | None:
    """Linux's ``MemAvailable`` in bytes (None where there is no such figure)."""
    try:
        with meminfo.open("rb") as lines:
            for line in lines:
                if line.startswith(b"MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


class HashLag:
    """The bound, looked up again at most every :data:`REFRESH` seconds."""

    def __init__(
        self,
        floor: int,
        uploads: Callable[[], int],
        *,
        available: Callable[[], int | None] = available_memory,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.floor = floor
        self._uploads = uploads
        self._available = available
        self._clock = clock
        self._bound = floor
        self._looked_up = float("-inf")

    def bound(self) -> int:
        """The lag each upload being written may have now (``uploads`` counts them)."""
        now = self._clock()
        if now - self._looked_up >= REFRESH:
            self._looked_up = now
            memory = self._available()
            spare = 0 if memory is None else int(memory * MEMORY_SHARE) // max(1, self._uploads())
            self._bound = max(self.floor, min(MAX_LAG, spare))
        return self._bound
