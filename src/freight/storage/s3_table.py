"""The part table of S3 blobs: the port :class:`~freight.storage.s3_blobs.S3Blobs` keeps
its multipart uploads' state in, shared by every node.

Per blob (keyed by the freight upload id): the S3 multipart upload's id, the part size
``P``, every uploaded part (number, size, ETag, checksum) and every *piece*: a byte range of
a part that was not complete when it had to become durable, stored as its own object.
The table, never ListParts, says which bytes the store holds: SeaweedFS keeps every upload
of a re-sent part number and lists them all, and omits part checksums.

Each operation is atomic on its own; two nodes recording parts or pieces of one blob at
once both land, and a re-sent part number replaces its row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from freight.core.rangeset import RangeSet

__all__ = ["BlobTable", "PartRow", "PartTable", "PieceRow"]


@dataclass(frozen=True)
class PartRow:
    """An uploaded part. ``checksum``: its CRC-32 (4 bytes, big-endian), which the store
    verified on upload (``x-amz-checksum-crc32``); empty for a part the store copied
    (UploadPartCopy); a SHA-256 (32 bytes) in rows recorded before the
    table's schema version 2."""

    number: int
    size: int
    etag: str
    checksum: bytes


@dataclass(frozen=True)
class PieceRow:
    """Bytes ``[start, end)`` of the blob, stored as the object the store names by them
    (``checksum`` as in :class:`PartRow`)."""

    start: int
    end: int
    checksum: bytes


@dataclass
class BlobTable:
    upload: str
    part_size: int
    parts: dict[int, PartRow] = field(default_factory=dict)
    pieces: list[PieceRow] = field(default_factory=list)

    def piece_ranges(self) -> RangeSet:
        return RangeSet((piece.start, piece.end) for piece in self.pieces)

    def has_whole(self, number: int) -> bool:
        row = self.parts.get(number)
        return row is not None and row.size == self.part_size


class PartTable(Protocol):
    async def create(self, blob_id: str, upload: str, part_size: int) -> bool:
        """A table for a new blob; ``False`` if the blob has one already."""

    async def load(self, blob_id: str) -> BlobTable | None:
        """The blob's table; ``None`` when it has none (finished, deleted or unknown)."""

    async def record(
        self, blob_id: str, parts: Sequence[PartRow] = (), pieces: Sequence[PieceRow] = ()
    ) -> None:
        """Add parts (replacing rows of the same number) and pieces in one transaction;
        :class:`~freight.errors.UploadNotFound` when the blob's table is gone."""

    async def drop(self, blob_id: str) -> None:
        """Forget the blob's table (unknown ids are not an error)."""

    async def close(self) -> None: ...
