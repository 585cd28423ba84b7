"""Reading a file's chunks for the chunk client: each read once, with its digest if chunks
carry one, feeding the file's SHA-256 on the way (see :mod:`freight.client.chunks`)."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from pathlib import Path

from freight.client.errors import LocalFileChanged
from freight.client.hashing import SplitHasher

__all__ = ["Chunk", "ChunkReader"]


@dataclass(frozen=True)
class Chunk:
    """A chunk ready to send: its number, byte range, the ranges of it the server lacks
    (``spans``) and its digest; ``buffer`` holds its bytes when chunks are held (else they
    are read again from the file as they are sent)."""

    n: int
    start: int
    end: int
    spans: tuple[tuple[int, int], ...]
    digest: bytes | None
    buffer: bytearray | None

    def content_range(self, start: int, end: int, *, always: bool = False) -> str | None:
        """The ``Content-Range`` of a piece; None for the whole chunk (any server takes it)
        unless ``always``."""
        if (start, end) == (self.start, self.end) and not always:
            return None
        return f"bytes {start - self.start}-{end - 1 - self.start}/{self.end - self.start}"

    def view(self, start: int, end: int) -> memoryview | None:
        """The held bytes ``[start, end)`` of the file, if the chunk's bytes are held."""
        if self.buffer is None:
            return None
        return memoryview(self.buffer)[start - self.start : end - self.start]


class ChunkReader:
    """Reads chunks of ``path`` ``read_size`` bytes at a time when they are not held."""

    def __init__(self, path: Path, read_size: int, *, chunk_digests: bool) -> None:
        self.path = path
        self.read_size = read_size
        self.chunk_digests = chunk_digests

    async def read(
        self,
        span: tuple[int, int],
        n: int,
        sending: tuple[tuple[int, int], ...],
        buffer: bytearray | None,
        hasher: SplitHasher,
    ) -> Chunk:
        """Chunk ``n`` (bytes ``span``) read once: its digest, the file's SHA-256 fed, and
        its bytes if ``buffer`` is given (all of it, even when the server lacks only part:
        the file's hash needs it all)."""
        start, end = span
        if not self.chunk_digests:
            if buffer is None:
                return Chunk(n, start, end, sending, None, None)  # read from the file as sent
            await asyncio.to_thread(self.read_into, memoryview(buffer)[: end - start], start)
            return Chunk(n, start, end, sending, None, buffer)
        if buffer is None:
            digest = await asyncio.to_thread(self.digest_range, start, end, hasher)
            return Chunk(n, start, end, sending, digest, None)
        view = memoryview(buffer)[: end - start]
        await asyncio.to_thread(self.read_into, view, start)
        # Both hashes read the same buffer at once, each in its own thread.
        digest, _ = await asyncio.gather(
            asyncio.to_thread(_sha256, view), asyncio.to_thread(hasher.feed, start, view)
        )
        hasher.start()  # a feed past a gap (a resume) is caught up from disk meanwhile
        return Chunk(n, start, end, sending, digest, buffer)

    async def digest_of(self, chunk: Chunk, start: int, end: int) -> bytes | None:
        """The SHA-256 of bytes ``[start, end)`` if chunks carry digests: the chunk's own
        for the whole chunk, else the piece's (from the held bytes, or the file)."""
        if not self.chunk_digests:
            return None
        if chunk.digest is not None and (start, end) == (chunk.start, chunk.end):
            return chunk.digest
        view = chunk.view(start, end)
        if view is not None:
            return await asyncio.to_thread(_sha256, view)
        return await asyncio.to_thread(self.digest_range, start, end, None)

    def read_into(self, view: memoryview, start: int) -> None:
        with self.path.open("rb", buffering=0) as file:
            file.seek(start)
            done = 0
            while done < len(view):
                count = file.readinto(view[done:])
                if not count:
                    raise LocalFileChanged(f"{self.path} ended early at byte {start + done}")
                done += count

    def digest_range(self, start: int, end: int, hasher: SplitHasher | None) -> bytes:
        """SHA-256 of ``[start, end)`` read in pieces, which feed ``hasher`` too if given."""
        sha = hashlib.sha256()
        view = memoryview(bytearray(min(self.read_size, end - start)))
        with self.path.open("rb", buffering=0) as file:
            file.seek(start)
            position = start
            while position < end:
                count = file.readinto(view[: min(len(view), end - position)])
                if not count:
                    raise LocalFileChanged(f"{self.path} ended early at byte {position}")
                sha.update(view[:count])
                if hasher is not None:
                    hasher.feed(position, view[:count])
                position += count
        return sha.digest()


def _sha256(data: memoryview) -> bytes:
    return hashlib.sha256(data).digest()
