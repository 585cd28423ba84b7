"""SHA-256 of a whole file while only part of it passes through the transfer.

When a transfer resumes at offset X, bytes [X, N) flow through the client (read from the
local file for an upload, received for a download) but [0, X) do not. SHA-256 is strictly
sequential, so the prefix must be hashed *before* the rest. Rather than make the user wait
for that (croc users complain of hours of hashing before a resume), a worker thread hashes
the prefix from disk while the transfer runs, and keeps reading from disk until it has
caught up with the transfer; from then on the transfer's own chunks are hashed as they pass.

Rules, all under one lock:
- ``hashed`` is how far the digest reaches; a chunk at ``offset`` is hashed only when
  ``offset == hashed`` (otherwise the disk reader will cover it), so nothing is hashed twice
  or out of order;
- ``frontier`` is how far the file is known to be readable on disk (the prefix, plus every
  chunk fed); the disk reader stops when it reaches it;
- :meth:`SplitHasher.finish` reads whatever is still missing up to the total size.
hashlib releases the GIL on large buffers, so the reader really runs beside the transfer.

A file hashed before it is sent (to ask the server whether it has it already) is not hashed
again: inside :func:`known_digest`, a hasher of that file answers with the digest given,
reads nothing and ignores what is fed (the server's digest is still checked against it).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import threading
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path

from freight.client.errors import LocalFileChanged
from freight.client.http import CHUNK_SIZE

__all__ = ["SplitHasher", "hash_file", "known_digest"]

# (path, size, digest) of a file hashed already, for the hashers made in this context.
_KNOWN: ContextVar[tuple[Path, int, bytes] | None] = ContextVar("freight_known", default=None)


@contextlib.contextmanager
def known_digest(path: Path, size: int, digest: bytes) -> Iterator[None]:
    """Hashers of ``path`` made in this block (this task and those it starts) answer with
    ``digest`` for its first ``size`` bytes instead of hashing them again."""
    reset = _KNOWN.set((Path(path), size, digest))
    try:
        yield
    finally:
        _KNOWN.reset(reset)


def hash_file(path: Path, chunk_size: int = CHUNK_SIZE) -> tuple[int, bytes]:
    """(size, SHA-256) of ``path``, read once through one reused buffer (blocking)."""
    digest = hashlib.sha256()
    buffer = bytearray(chunk_size)
    view = memoryview(buffer)
    size = 0
    with path.open("rb", buffering=0) as file:
        while count := file.readinto(buffer):
            digest.update(view[:count])
            size += count
    return size, digest.digest()


class SplitHasher:
    """SHA-256 of ``path``'s first N bytes, fed partly by :meth:`feed` and partly from disk."""

    def __init__(self, path: Path, prefix: int, *, chunk_size: int = CHUNK_SIZE) -> None:
        self._path = path
        self._chunk_size = chunk_size
        self._lock = threading.Lock()
        self._sha = hashlib.sha256()
        self._hashed = 0
        self._frontier = prefix
        self._cancelled = False
        self._reader: asyncio.Future[None] | None = None
        known = _KNOWN.get()
        self._known = known if known is not None and known[0] == Path(path) else None
        if self._known is not None:
            self._hashed = self._frontier = self._known[1]

    @property
    def hashed(self) -> int:
        """How many leading bytes the digest covers so far."""
        with self._lock:
            return self._hashed

    def start(self) -> None:
        """Hash from disk, in a worker thread, whatever lies between the digest's reach and
        the frontier: the prefix at first. Call it again after feeds that came too early
        (past a gap) to catch up in the background; a no-op while a reader is running, after
        one failed (:meth:`finish` raises its error) or when nothing is missing."""
        if self._known is not None:
            return
        reader = self._reader
        if reader is not None and (
            not reader.done() or reader.cancelled() or reader.exception() is not None
        ):
            return
        with self._lock:
            behind = self._hashed < self._frontier and not self._cancelled
        if behind:
            self._reader = asyncio.ensure_future(asyncio.to_thread(self._read_from_disk))

    def feed(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Offer bytes found at ``offset``; they are on disk too. Thread-safe."""
        if self._known is not None:
            return
        view = memoryview(data)
        with self._lock:
            end = offset + view.nbytes
            if offset == self._hashed:
                self._sha.update(view)
                self._hashed = end
            self._frontier = max(self._frontier, end)

    async def finish(self, total: int) -> bytes:
        """The raw digest of bytes [0, total), reading from disk whatever was not fed."""
        if self._known is not None:
            if total != self._known[1]:
                raise LocalFileChanged(
                    f"{self._path} holds {self._known[1]} bytes where {total} were expected"
                )
            return self._known[2]
        with self._lock:
            self._frontier = max(self._frontier, total)
        if self._reader is not None:
            await self._reader
        await asyncio.to_thread(self._read_from_disk)
        with self._lock:
            if self._hashed != total:
                raise LocalFileChanged(
                    f"{self._path} holds {self._hashed} bytes where {total} were expected"
                )
            return self._sha.digest()

    async def close(self) -> None:
        """Stop the disk reader (it notices within one chunk) and wait for it."""
        with self._lock:
            self._cancelled = True
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await self._reader

    def _read_from_disk(self) -> None:
        buffer = bytearray(self._chunk_size)
        view = memoryview(buffer)
        with self._path.open("rb") as file:
            while True:
                with self._lock:
                    if self._cancelled or self._hashed >= self._frontier:
                        return
                    start = self._hashed
                    want = min(self._chunk_size, self._frontier - start)
                file.seek(start)
                count = file.readinto(view[:want])
                if not count:
                    raise LocalFileChanged(f"{self._path} ended early at byte {start}")
                with self._lock:
                    # A rewound transfer may have fed exactly this chunk meanwhile.
                    if self._hashed == start:
                        self._sha.update(view[:count])
                        self._hashed = start + count
