"""The blob store port: where an upload's bytes live, apart from its session record.

Every store can create a blob, write it at offsets, make it durable, finish it, read a
finished one and delete it. Some stores can do more, and each such ability is its own small
Protocol, checked with ``isinstance``: what the server advertises and which path it takes
follows from the abilities present, never from which backend it is.

============================  ==============================================================
ability                       what it enables (and what happens without it)
============================  ==============================================================
:class:`PipeTarget` (writer)  socket → pipe → file with ``splice``, bytes never in Python
                              (without: bytes pass through the writer's reused buffers)
:class:`SendfileSource`       downloads with ``sendfile`` (without: streamed through a
                              reused buffer from :meth:`BlobStore.open_reader`)
:class:`ReadBack`             the running SHA-256 reads recorded bytes back from the page
                              cache, behind the writers (without: hashed inline as
                              contiguous bytes pass; out-of-order bytes as below)
:class:`HeldRanges`           without ReadBack: bytes that arrived out of order are hashed
                              when the prefix before them completes, from what the store
                              still holds of them (an object store's spool, pieces)
                              (without, or beyond what it holds: read from the finished
                              blob at finish)
:class:`ServerConcat`         a final concatenation is assembled by the store itself
                              (without: copied through a reused buffer)
:class:`Presigner`            a download may be redirected to a signed URL of the store
:class:`PartSized`            the store keeps blobs in parts of a fixed size (S3 multipart):
                              the chunk API's chunk size follows it, so a chunk is a part
                              and parallel chunks go straight to their parts (without:
                              the server's own chunk size)
:class:`SyncsThrough`         a checkpoint inside a request makes durable only what is cheap
  (writer)                    to (whole parts shipped), the rest at the request's end
                              (without: every checkpoint makes everything durable)
============================  ==============================================================

Writers and readers are synchronous: the engine calls them from worker threads with its own
reused buffers, so no store allocates per call.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from freight._types import Buffer

__all__ = [
    "BlobReader",
    "BlobStore",
    "BlobWriter",
    "ClaimsAhead",
    "HeldRanges",
    "PartSized",
    "PipeTarget",
    "Presigner",
    "ReadBack",
    "SendfileSource",
    "ServerConcat",
    "SyncsThrough",
]


class BlobWriter(Protocol):
    """The bytes of one unfinished upload, written at their final offsets in any order."""

    def write_at(self, offset: int, data: Buffer) -> None: ...

    def sync(self) -> None:
        """Make everything written so far durable (the fsync policy decides when)."""

    def close(self) -> None: ...


class BlobReader(Protocol):
    """A blob read at offsets into the caller's buffer."""

    def read_into(self, offset: int, buffer: memoryview) -> int:
        """Fill ``buffer`` from ``offset``; returns the bytes read (0 past the end)."""

    def close(self) -> None: ...


class BlobStore(Protocol):
    async def create(self, upload_id: str) -> None:
        """An empty blob for a new upload (space is taken as bytes arrive)."""

    async def open_writer(self, upload_id: str) -> BlobWriter:
        """Write an unfinished blob. One whose finish was interrupted (a crash between the
        store finishing it and the record saying so) opens too, for the finish to redo."""

    async def open_reader(self, upload_id: str) -> BlobReader:
        """Read a finished blob."""

    async def finish(self, upload_id: str, length: int) -> None:
        """Turn the complete blob of ``length`` bytes into a finished one (a rename, a
        multipart completion); finishing one already finished does nothing."""

    async def delete(self, upload_id: str) -> None:
        """Free the blob, finished or not; unknown ids are not an error."""

    async def free_bytes(self) -> int | None:
        """Room left for new bytes; ``None``: the store has no limit freight can see."""

    async def probe(self) -> None:
        """Check that the store takes writes now (a readiness probe); raises what stops it."""

    async def close(self) -> None: ...


@runtime_checkable
class PipeTarget(Protocol):
    """A writer that takes bytes straight from a pipe (``splice``), never through user space."""

    def write_from_pipe(self, pipe: int, offset: int, size: int) -> None: ...

    def sync(self) -> None: ...


@runtime_checkable
class ClaimsAhead(Protocol):
    """A writer that may claim space ahead of what it has written (cheaper writes), told
    how far the bytes it may write reach so that it never claims past them."""

    def claim_within(self, end: int) -> None: ...


@runtime_checkable
class SendfileSource(Protocol):
    """A store whose finished blobs are local files the kernel can send directly."""

    def file_path(self, upload_id: str) -> Path: ...


@runtime_checkable
class ReadBack(Protocol):
    """A store where bytes just written are cheap to read again (the page cache)."""

    def open_part_reader(self, upload_id: str) -> BlobReader:
        """Read an unfinished blob; called from worker threads."""


@runtime_checkable
class HeldRanges(Protocol):
    """A store without cheap read-back that can still read some recorded bytes of an
    unfinished blob: those it keeps for the running hash (bounded; see the store)."""

    def open_held_reader(self, upload_id: str) -> BlobReader:
        """Read recorded bytes of an unfinished blob, from worker threads; ``read_into``
        returns 0 where the store cannot read them before the blob is finished."""

    def hashed_through(self, upload_id: str, offset: int) -> None:
        """The running hash covers the bytes before ``offset``: what the store keeps
        for it there may go."""


@runtime_checkable
class ServerConcat(Protocol):
    """A store that assembles a blob from finished ones itself (a server-side copy)."""

    async def concatenate(self, upload_id: str, part_ids: Sequence[str]) -> None:
        """Fill the unfinished blob ``upload_id`` with the finished blobs ``part_ids``, one
        after another (it is then finished as usual)."""


@runtime_checkable
class Presigner(Protocol):
    """A store that can hand out a signed URL for reading a finished blob."""

    async def presign_download(
        self, upload_id: str, *, expires_in: int, filename: str | None
    ) -> str: ...


@runtime_checkable
class PartSized(Protocol):
    """A store that keeps a blob in parts of ``part_size`` bytes (the last may be shorter);
    writes covering whole parts, at part boundaries, cost it least."""

    part_size: int


@runtime_checkable
class SyncsThrough(Protocol):
    """A writer for which making everything durable mid-request costs extra (an object
    store stores a partial part as an object of its own, then uploads it again inside
    the whole part): a checkpoint inside a request asks for what is durable cheaply, and
    the request's end calls :meth:`BlobWriter.sync` for the rest."""

    def sync_through(self, start: int, end: int) -> int:
        """Make durable what is cheap of bytes ``[start, end)`` (written already) and
        return ``d``, ``start <= d <= end``, with every byte of ``[start, d)`` durable."""

    def sync_range(self, start: int, end: int) -> None:
        """A request's end: make bytes ``[start, end)`` durable, whatever it costs, and
        leave the bytes other requests are writing to their own ends."""
