"""Writing received bytes to a file at known offsets, off the event loop, with flat memory.

Received bytes are gathered into large batches. Each batch is written (``os.pwrite``) in a
worker thread while the next one is being received, and once it is on disk it is hashed in
another worker thread while the batch after it is written: receiving, writing and hashing
overlap, and SHA-256 (which releases the GIL) never holds up the socket. One write and one
hash run at a time, so memory stays at about three batches, and the hasher sees the bytes
in order and only once they are on disk (a :class:`SplitHasher` may re-read them from
there).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

from freight.client.hashing import SplitHasher

__all__ = [
    "RECEIVE_BATCH",
    "STALE_AFTER",
    "PartSink",
    "PartWriter",
    "fsync_directory",
    "pwrite_all",
]

RECEIVE_BATCH = 4 * 1024 * 1024
"""Bytes per write and per hash: large, so the per-batch costs (two thread hand-offs, a
progress report) are negligible per byte, and small enough to keep memory flat."""

STALE_AFTER = 0.25
"""Seconds received bytes may wait in memory for their batch to fill: on a slow or stalled
link they are written anyway, so progress moves and a resume finds them on disk."""

BatchT = TypeVar("BatchT")


class PartSink(Generic[BatchT]):
    """Batches into a file: batch *k* is written while batch *k - 1* is hashed.

    Subclasses say how a batch is written (:meth:`write`, returning where it ends) and
    hashed (:meth:`hash`); both run in worker threads. ``on_written`` gets that end as soon
    as each write is done. When :meth:`add` returns, every batch before the last two is
    written and hashed, so a caller that receives into reused buffers needs three of them in
    turn. A write or hash still running when the caller is cancelled is waited for by
    :meth:`close`, so no thread ever outlives the buffer or the descriptor.
    """

    def __init__(self, on_written: Callable[[int], None]) -> None:
        self._on_written = on_written
        self._writing: asyncio.Future[int] | None = None
        self._in_write: BatchT | None = None  # hashed once written
        self._hashing: asyncio.Future[None] | None = None

    def write(self, batch: BatchT) -> int:
        raise NotImplementedError

    def hash(self, batch: BatchT) -> None:
        raise NotImplementedError

    async def add(self, batch: BatchT | None) -> None:
        """Start writing ``batch`` (None: nothing new) once the previous write is done."""
        await self._settle()
        if self._in_write is not None:
            self._hashing = asyncio.ensure_future(asyncio.to_thread(self.hash, self._in_write))
        if batch is not None:
            self._writing = asyncio.ensure_future(asyncio.to_thread(self.write, batch))
            # Reported as soon as it is on disk, even if nothing else arrives for a while.
            self._writing.add_done_callback(self._report)
        self._in_write = batch

    async def close(self) -> None:
        """Write and hash everything added."""
        await self.add(None)
        await self._settle()

    def _report(self, writing: asyncio.Future[int]) -> None:
        if not writing.cancelled() and writing.exception() is None:
            self._on_written(writing.result())

    async def _settle(self) -> None:
        """Wait for the running write and the running hash (shielded, and forgotten only
        once done: if the caller is cancelled, :meth:`close` waits for the same threads)."""
        try:
            if self._writing is not None:
                writing = self._writing
                try:
                    await asyncio.shield(writing)
                finally:
                    if writing.done():
                        self._writing = None
                        if writing.cancelled() or writing.exception() is not None:
                            self._in_write = None  # never hash bytes that did not reach the disk
        finally:
            if self._hashing is not None:
                hashing = self._hashing
                try:
                    await asyncio.shield(hashing)
                finally:
                    if hashing.done():
                        self._hashing = None


class _Run:
    """Consecutive pieces of the file from ``start``."""

    __slots__ = ("pieces", "start")

    def __init__(self, start: int, pieces: list[bytes]) -> None:
        self.start = start
        self.pieces = pieces


class _RunSink(PartSink[_Run]):
    def __init__(self, fd: int, hasher: SplitHasher | None, on_written: Callable[[int], None]):
        super().__init__(on_written)
        self._fd = fd
        self._hasher = hasher

    def write(self, batch: _Run) -> int:
        position = batch.start
        for piece in batch.pieces:
            position = pwrite_all(self._fd, piece, position)
        return position

    def hash(self, batch: _Run) -> None:
        if self._hasher is not None:
            position = batch.start
            for piece in batch.pieces:
                self._hasher.feed(position, piece)
                position += len(piece)


class PartWriter:
    """Appends received chunks to ``fd`` from ``start`` on, a batch at a time; ``position``
    is what is written (and, after :meth:`flush`, hashed)."""

    def __init__(self, fd: int, start: int, *, hasher: SplitHasher | None, batch_size: int) -> None:
        self._sink = _RunSink(fd, hasher, self._written)
        self._batch_size = batch_size
        self._batch: list[bytes] = []
        self._batched = 0
        self.position = start  # bytes [start, position) are written
        self.received = start  # bytes [start, received) are written, in flight or batched
        self.on_written: Callable[[int], None] | None = None

    def append(self, chunk: bytes) -> bool:
        """Add ``chunk`` to the batch; True when the batch is full (time to :meth:`submit`)."""
        self._batch.append(chunk)
        self._batched += len(chunk)
        self.received += len(chunk)
        return self._batched >= self._batch_size

    async def submit(self) -> None:
        """Start writing the batch (full or not) once the write before it is done."""
        if self._batch:
            batch = _Run(self.received - self._batched, self._batch)
            self._batch, self._batched = [], 0
            await self._sink.add(batch)

    async def flush(self) -> int:
        """Write and hash everything appended; returns the new ``position``."""
        await self.submit()
        await self._sink.close()
        return self.position

    def _written(self, position: int) -> None:
        self.position = position
        if self.on_written is not None:
            self.on_written(position)


def pwrite_all(fd: int, data: bytes | bytearray | memoryview, position: int) -> int:
    """Write all of ``data`` at ``position`` (``os.pwrite`` may write less); returns where
    it ends."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, position)
        view, position = view[written:], position + written
    return position


def fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (where the OS allows syncing a directory)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
