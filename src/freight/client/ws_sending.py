"""The sending side of a WebSocket upload: the server's credit window and the file read a
block of frames ahead (see :mod:`freight.client.ws`).

:class:`SendWindow` says how far the server lets the client send and when anything last
moved (for the stall watchdog); :class:`BlockReader` reads whole frames a block at a time
in a worker thread that feeds the SHA-256 too, into two reused buffers.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from freight.client.errors import LocalFileChanged
from freight.client.hashing import SplitHasher

__all__ = ["BlockReader", "SendWindow"]


class SendWindow:
    """How far the server lets the client send: ``limit`` grows with each credit grant."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.done_sent = False
        self._moved = asyncio.Event()
        self.moved_at = asyncio.get_running_loop().time()  # last frame sent or message read

    def moved(self) -> None:
        self.moved_at = asyncio.get_running_loop().time()

    def grant(self, limit: int) -> None:
        if limit > self.limit:
            self.limit = limit
            self._moved.set()

    async def room_until(self, end: int) -> None:
        """Wait until bytes up to ``end`` may be sent."""
        while self.limit < end:
            self._moved.clear()
            await self._moved.wait()


class BlockReader:
    """Reads a file in blocks of whole frames, one block ahead, into two reused buffers.

    A worker thread reads each block and feeds it to the SHA-256, so the event loop hops to
    a thread once per block rather than once per frame (a hop costs more than it seems on a
    busy machine: a thread is woken, another core is interrupted). The block handed out last
    stays untouched until the next-but-one read, by which time its frames were sent:
    aiohttp masks (copies) a client frame before ``send_bytes`` returns.
    """

    def __init__(self, path: Path, block_size: int, hasher: SplitHasher) -> None:
        self._path = path
        self._file = path.open("rb", buffering=0)
        self._hasher = hasher
        self._buffers = (memoryview(bytearray(block_size)), memoryview(bytearray(block_size)))
        self._turn = 0
        self._pending: asyncio.Future[memoryview] | None = None

    def read_at(self, offset: int, size: int) -> asyncio.Future[memoryview]:
        view = self._buffers[self._turn][:size]
        self._turn ^= 1
        future = asyncio.ensure_future(asyncio.to_thread(self._read, view, offset))
        # A read-ahead nobody awaits (the attempt failed) must not log "never retrieved".
        future.add_done_callback(lambda done: done.cancelled() or done.exception())
        self._pending = future
        return future

    def close(self) -> None:
        """Close the file now, or once the read in flight (which uses it) returns."""
        pending = self._pending
        if pending is not None and not pending.done():
            pending.add_done_callback(lambda _: self._file.close())
        else:
            self._file.close()

    def _read(self, view: memoryview, offset: int) -> memoryview:
        self._file.seek(offset)
        filled = 0
        while filled < len(view):
            count = self._file.readinto(view[filled:])
            if not count:
                raise LocalFileChanged(f"{self._path} shrank while being sent (at byte {offset})")
            filled += count
        self._hasher.feed(offset, view)
        return view
