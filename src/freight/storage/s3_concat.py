"""Server-side concatenation for S3 blobs: the target keeps the fixed part layout.

Target part ``n`` covers bytes ``[(n-1)·P, n·P)`` of the concatenation. A part that lies
inside one finished source is copied by the store itself (UploadPartCopy with a source
range); a part that spans sources (small tus partials, a boundary) is assembled from
ranged GETs into a spool file and uploaded; at most four parts are copied or assembled
at once.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Sequence
from pathlib import Path

from freight.errors import UploadNotFound
from freight.storage.s3_parts import S3Parts
from freight.storage.s3_table import BlobTable, PartRow, PartTable
from freight.storage.s3_writer import bounded

# Copies the store makes at once (each holds at most one assembled part on local disk).
PARALLEL_COPIES = 4

__all__ = ["concatenate"]


async def concatenate(
    parts: S3Parts, tables: PartTable, spool_dir: Path, upload_id: str, sources: Sequence[str]
) -> None:
    table = await tables.load(upload_id)
    if table is None:
        raise UploadNotFound("no such upload")
    spans: list[tuple[str, int, int]] = []  # source key, start in the result, size
    total = 0
    for source in sources:
        key = parts.key(source)
        head = await parts.client.head_object(Bucket=parts.bucket, Key=key)
        size = int(head["ContentLength"])
        if size:
            spans.append((key, total, size))
            total += size
    size = table.part_size
    jobs: list[Awaitable[PartRow]] = []
    for index in range((total + size - 1) // size):
        lo, hi = index * size, min(total, (index + 1) * size)
        pieces = [
            (key, max(lo, start) - start, min(hi, start + length) - max(lo, start))
            for key, start, length in spans
            if start < hi and lo < start + length
        ]
        if len(pieces) == 1:
            jobs.append(_copy_part(parts, upload_id, table, index + 1, pieces[0]))
        else:
            jobs.append(_assemble(parts, spool_dir, upload_id, table, index + 1, pieces))
    await tables.record(upload_id, parts=await bounded(jobs, PARALLEL_COPIES))


async def _copy_part(
    parts: S3Parts, upload_id: str, table: BlobTable, number: int, piece: tuple[str, int, int]
) -> PartRow:
    key, offset, length = piece
    response = await parts.client.upload_part_copy(
        Bucket=parts.bucket,
        Key=parts.key(upload_id),
        UploadId=table.upload,
        PartNumber=number,
        CopySource={"Bucket": parts.bucket, "Key": key},
        CopySourceRange=f"bytes={offset}-{offset + length - 1}",
    )
    # The store copied the bytes without freight seeing them: no checksum to record (the
    # engine's SHA-256 of the whole blob still covers them).
    return PartRow(number, length, str(response["CopyPartResult"]["ETag"]), b"")


async def _assemble(
    parts: S3Parts,
    spool_dir: Path,
    upload_id: str,
    table: BlobTable,
    number: int,
    pieces: list[tuple[str, int, int]],
) -> PartRow:
    path = spool_dir / f"{upload_id}.concat.{number}"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        path.unlink()
        at = 0
        for key, offset, length in pieces:
            await parts.download(key, offset, length, fd, at)
            at += length
        return await parts.upload_part(upload_id, table.upload, number, fd, at)
    finally:
        os.close(fd)
