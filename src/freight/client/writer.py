"""Writing received bytes to a file at known offsets, off the event loop, with flat memory.

Chunks from the socket are batched (about one ``batch_size``) and each batch is written
with ``os.pwrite`` in a worker thread while the next batch is being received; at most one
batch is in flight, so memory stays at about two batches. After a batch is written its bytes
are fed to the hasher (it may re-read them from disk, so they must be there first).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from pathlib import Path

from freight.client.hashing import SplitHasher

__all__ = ["PartWriter", "fsync_directory"]


class PartWriter:
    """Appends received chunks to ``fd`` from ``start`` on; ``position`` is what is written."""

    def __init__(self, fd: int, start: int, *, hasher: SplitHasher | None, batch_size: int) -> None:
        self._fd = fd
        self._hasher = hasher
        self._batch_size = batch_size
        self._batch: list[bytes] = []
        self._batched = 0
        self._pending: asyncio.Future[int] | None = None
        self.position = start  # bytes [start, position) are written
        self.received = start  # bytes [start, received) are written, in flight or batched
        self.on_written: Callable[[int], None] | None = None

    async def add(self, chunk: bytes) -> None:
        """Queue ``chunk``; returns once the previous batch is written if a batch is full."""
        self._batch.append(chunk)
        self._batched += len(chunk)
        self.received += len(chunk)
        if self._batched >= self._batch_size:
            await self._submit()

    async def flush(self) -> int:
        """Write everything queued; returns the new ``position``."""
        if self._batch:
            await self._submit()
        await self._settle()
        return self.position

    async def _submit(self) -> None:
        await self._settle()
        batch, start = self._batch, self.received - self._batched
        self._batch, self._batched = [], 0
        self._pending = asyncio.ensure_future(asyncio.to_thread(self._write, batch, start))

    async def _settle(self) -> None:
        if self._pending is not None:
            # Shielded, and forgotten only once done: if the caller is cancelled here, its
            # cleanup's flush() waits for this same write before the descriptor is closed.
            self.position = await asyncio.shield(self._pending)
            self._pending = None
            if self.on_written is not None:
                self.on_written(self.position)

    def _write(self, batch: list[bytes], start: int) -> int:
        position = start
        for chunk in batch:
            view = memoryview(chunk)
            while view:
                written = os.pwrite(self._fd, view, position)
                if self._hasher is not None:
                    self._hasher.feed(position, view[:written])
                position += written
                view = view[written:]
        return position


def fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (where the OS allows syncing a directory)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
