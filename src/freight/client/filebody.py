"""A request body that streams a byte range of a local file with flat memory.

Reads go through one reused buffer (``readinto``) in a worker thread, one chunk ahead of
the network: while aiohttp writes chunk k, the thread reads and hashes chunk k+1. Each chunk
is handed to aiohttp as a ``bytes`` copy because asyncio transports may keep a reference to
what they are given until the socket accepts it (Python 3.12+ queues memoryviews, and TLS
transports queue whatever they get), so a reused buffer could be overwritten while queued.
The copy costs one memcpy per MiB; memory stays at a few chunks whatever the file size.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from io import BufferedReader
from pathlib import Path

from freight.client.errors import LocalFileChanged
from freight.client.hashing import SplitHasher

__all__ = ["FileBody"]


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
        self._buffer = memoryview(bytearray(chunk_size))
        self._file: BufferedReader | None = None
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
            # Shielded: a cancelled request must not abandon a thread still using the buffer.
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
        return chunk

    def close(self) -> None:
        """Close the file now, or as soon as a read in flight (which uses it) returns."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None and not ahead.done():
            ahead.add_done_callback(lambda _: self._close_file())
        else:
            self._close_file()

    def _close_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _start_read(self, offset: int) -> asyncio.Future[bytes]:
        future = asyncio.ensure_future(asyncio.to_thread(self._read_at, offset))
        # A read-ahead nobody awaits (the request failed) must not log "never retrieved".
        future.add_done_callback(lambda done: done.cancelled() or done.exception())
        return future

    def _read_at(self, offset: int) -> bytes:
        if self._file is None:
            self._file = self._path.open("rb")
            self._file.seek(offset)
        view = self._buffer[: min(len(self._buffer), self._end - offset)]
        count = self._file.readinto(view)
        if not count:
            raise LocalFileChanged(f"{self._path} shrank while being sent (ended at byte {offset})")
        if self._hasher is not None:
            self._hasher.feed(offset, view[:count])
        return bytes(view[:count])
