"""Request bodies that stream a byte range of a local file, or bytes already read, flatly.

:class:`FileBody` reads in a worker thread, one piece ahead of the network: while aiohttp
writes piece k, the thread reads and hashes piece k+1. Each piece is read by ``os.pread``
into a ``bytes`` object of its own, which aiohttp may keep as long as it likes (asyncio
transports may hold on to what they are given until the socket takes it; Python 3.12+
queues memoryviews, and TLS transports queue whatever they get, so a reused buffer could be
overwritten while queued). That is one copy per byte, as a read into a reused buffer would
be: glibc hands the same memory back for each piece, so no page is touched for the first
time. Memory stays at a few pieces whatever the file size.

:class:`BufferBody` sends bytes the caller already holds (a chunk read once for its digest)
in pieces, without copying them; the caller must not change them until the request is over.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

from freight.client.errors import LocalFileChanged
from freight.client.hashing import SplitHasher
from freight.client.rate import pace

__all__ = ["BufferBody", "FileBody"]


class FileBody:
    """Async iterator of ``bytes`` covering ``path[start:end]``; pass it as ``data=``.

    aiohttp wraps any exception raised here into a connection error, which would look
    retryable; the original is kept in :attr:`error` so the caller can re-raise it.
    """

    def __init__(
        self,
        path: Path,
        start: int,
        end: int,
        *,
        chunk_size: int,
        hasher: SplitHasher | None = None,
        on_read: Callable[[int], None] | None = None,
    ) -> None:
        self._path = path
        self._position = start
        self._end = end
        self._hasher = hasher
        self._on_read = on_read
        self._chunk_size = chunk_size
        self._fd: int | None = None
        self._ahead: asyncio.Future[bytes] | None = None
        self.error: BaseException | None = None

    def __aiter__(self) -> FileBody:
        return self

    async def __anext__(self) -> bytes:
        if self._position >= self._end:
            raise StopAsyncIteration
        if self._ahead is None:
            self._ahead = self._start_read(self._position)
        try:
            # Shielded: a cancelled request must not abandon a thread still using the file.
            chunk = await asyncio.shield(self._ahead)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self.error = exc
            self._ahead = None
            raise
        self._position += len(chunk)
        self._ahead = self._start_read(self._position) if self._position < self._end else None
        if self._on_read is not None:
            self._on_read(self._position)
        await pace(len(chunk))  # --limit-rate
        return chunk

    def close(self) -> None:
        """Close the file now, or as soon as a read in flight (which uses it) returns."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None and not ahead.done():
            ahead.add_done_callback(lambda _: self._close_file())
        else:
            self._close_file()

    def _close_file(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _start_read(self, offset: int) -> asyncio.Future[bytes]:
        future = asyncio.ensure_future(asyncio.to_thread(self._read_at, offset))
        # A read-ahead nobody awaits (the request failed) must not log "never retrieved".
        future.add_done_callback(lambda done: done.cancelled() or done.exception())
        return future

    def _read_at(self, offset: int) -> bytes:
        if self._fd is None:
            self._fd = os.open(self._path, os.O_RDONLY)
        chunk = os.pread(self._fd, min(self._chunk_size, self._end - offset), offset)
        if not chunk:
            raise LocalFileChanged(f"{self._path} shrank while being sent (ended at byte {offset})")
        if self._hasher is not None:
            self._hasher.feed(offset, chunk)
        return chunk


class BufferBody:
    """Async iterator over ``data`` in pieces of ``piece_size`` (views, not copies), for
    ``data=``; ``on_sent`` gets the position (from ``start``) after each piece is taken."""

    error: BaseException | None = None  # nothing here can fail; the same interface as FileBody

    def __init__(
        self,
        data: memoryview,
        start: int,
        *,
        piece_size: int,
        on_sent: Callable[[int], None] | None = None,
    ) -> None:
        self._data = data
        self._start = start
        self._piece_size = piece_size
        self._on_sent = on_sent
        self._taken = 0

    def __aiter__(self) -> BufferBody:
        return self

    async def __anext__(self) -> memoryview:
        if self._taken and self._on_sent is not None:
            self._on_sent(self._start + self._taken)  # aiohttp has written the last piece
        if self._taken >= len(self._data):
            raise StopAsyncIteration
        piece = self._data[self._taken : self._taken + self._piece_size]
        self._taken += len(piece)
        await pace(len(piece))  # --limit-rate
        return piece

    def close(self) -> None:
        """Nothing to release (the same interface as :class:`FileBody`)."""
