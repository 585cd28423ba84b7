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

__all__ = ["HASH_LAG", "LAG_PATIENCE", "SplitHasher", "hash_file", "known_digest"]

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


# How far a sendfile transfer may run ahead of the hash that follows it: pages it read a
# moment ago are still in the page cache.
HASH_LAG = 64 * 1024 * 1024
LAG_PATIENCE = 5.0  # seconds a send waits at most for the hash, before its next piece


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

    def cover(self, end: int) -> None:
        """Bytes up to ``end`` are on disk and will pass through the transfer without being
        fed (``sendfile`` moves them): hash them from disk in the background meanwhile."""
        with self._lock:
            self._frontier = max(self._frontier, end)
        self.start()

    async def keep_up(self, since: int, sent: int) -> None:
        """A transfer that started at ``since`` has sent the file up to ``sent`` with
        ``sendfile``: hash up to there from disk, behind it, and wait while the hash is more
        than :data:`HASH_LAG` behind. The hash then reads the pages the send has just read,
        from the page cache, however large the file and whichever side is faster (a reader
        racing ahead, or left far behind, would have the disk read them twice once the file
        outgrows the page cache). No wait while a resume's prefix (before ``since``) is
        hashed, and none longer than :data:`LAG_PATIENCE` at a time: the link stays busy."""
        self.cover(sent)
        loop = asyncio.get_running_loop()
        until = loop.time() + LAG_PATIENCE
        while True:
            with self._lock:
                if self._hashed < since or self._hashed + HASH_LAG >= sent or self._cancelled:
                    return
            reader = self._reader
            if reader is None or reader.done():
                self.start()  # it stopped at an older frontier: go on to this one
                reader = self._reader
                if reader is None or reader.done():
                    return  # nothing to read, or it failed: finish() says so
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(reader), until - loop.time())
            if loop.time() >= until:
                return

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
