"""Buffers for moving bytes between sockets and disk, bounded so memory stays flat under any
number of uploads.

Each writer stages bytes in a pair of buffers (one filling, one being written). A fixed
number of large pairs is kept and reused; writers beyond that get small pairs made on the
spot. A crowd of slow clients therefore costs speed, never memory, and no writer ever waits
for a buffer (waiting would let idle connections starve busy ones).

Reading stored bytes back (hashing a range that arrived out of order, copying parts into a
concatenation) is work no client waits on byte by byte, so it shares a few
:class:`ReadBuffers` and waits its turn: a buffer per upload would make memory grow with the
number of uploads finishing or catching up at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

__all__ = ["LARGE_BUFFER", "READ_BUFFER", "SMALL_BUFFER", "BufferPair", "BufferPool", "ReadBuffers"]

LARGE_BUFFER = 1024 * 1024
SMALL_BUFFER = 128 * 1024
# Reading back runs whole in one worker thread, so a read costs a syscall, not a hop through
# the event loop: a quarter of a writer's buffer reads and hashes as fast.
READ_BUFFER = 256 * 1024

BufferPair = tuple[bytearray, bytearray]


class BufferPool:
    def __init__(
        self, pairs: int = 8, size: int = LARGE_BUFFER, small_size: int = SMALL_BUFFER
    ) -> None:
        self.size = size
        self.small_size = small_size
        self._capacity = pairs
        self._made = 0
        self._free: list[BufferPair] = []

    def acquire(self) -> BufferPair:
        if self._free:
            return self._free.pop()
        if self._made < self._capacity:
            self._made += 1
            return bytearray(self.size), bytearray(self.size)
        return bytearray(self.small_size), bytearray(self.small_size)

    def release(self, pair: BufferPair) -> None:
        """Take a pair back; small pairs are simply dropped."""
        if len(pair[0]) == self.size and len(self._free) < self._capacity:
            self._free.append(pair)

    def discard(self, pair: BufferPair) -> None:
        """Forget a pair that cannot be reused (a worker thread may still hold it)."""
        if len(pair[0]) == self.size:
            self._made -= 1

    @property
    def idle_pairs(self) -> int:
        return len(self._free)


class ReadBuffers:
    """At most ``count`` buffers of ``size`` bytes, lent out one at a time; borrowers wait.

    A buffer goes back for reuse only when the work using it ended normally: after a
    failure or a cancellation a worker thread may still be reading into it, so it is dropped
    (and its slot freed) instead.
    """

    def __init__(self, count: int = 2, size: int = READ_BUFFER) -> None:
        if count < 1:
            raise ValueError("ReadBuffers needs at least one buffer")
        self.size = size
        self._slots = asyncio.Semaphore(count)
        self._free: list[bytearray] = []

    @contextlib.asynccontextmanager
    async def borrow(self) -> AsyncIterator[bytearray]:
        async with self._slots:
            buffer = self._free.pop() if self._free else bytearray(self.size)
            yield buffer
            self._free.append(buffer)

    @property
    def idle(self) -> int:
        """Buffers made earlier and free now."""
        return len(self._free)
