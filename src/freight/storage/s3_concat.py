"""Server-side concatenation for S3 blobs: the target keeps the fixed part layout.

Target part ``n`` covers bytes ``[(n-1)·P, n·P)`` of the concatenation. A part that lies
inside one finished source is copied by the store itself (UploadPartCopy with a source
range); a part that spans sources (small tus partials, a boundary) is assembled from
ranged GETs into a spool file and uploaded, so at most one part is ever on local disk.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from freight.errors import UploadNotFound
from freight.storage.s3_parts import S3Parts
from freight.storage.s3_state import PartTable

__all__ = ["concatenate"]


async def concatenate(
    parts: S3Parts, spool_dir: Path, upload_id: str, sources: Sequence[str]
) -> None:
    state_key = parts.state_key(upload_id)
    table = await parts.tables.load(state_key)
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
    uploaded: dict[int, tuple[str, int]] = {}
    for index in range((total + size - 1) // size):
        lo, hi = index * size, min(total, (index + 1) * size)
        pieces = [
            (key, max(lo, start) - start, min(hi, start + length) - max(lo, start))
            for key, start, length in spans
            if start < hi and lo < start + length
        ]
        if len(pieces) == 1:
            etag = await _copy_part(parts, upload_id, table, index + 1, pieces[0])
        else:
            etag = await _assemble(parts, spool_dir, upload_id, table, index + 1, pieces)
        uploaded[index + 1] = (etag, hi - lo)

    def record(fresh: PartTable) -> None:
        fresh.parts.update(uploaded)

    await parts.tables.update(state_key, record)


async def _copy_part(
    parts: S3Parts, upload_id: str, table: PartTable, number: int, piece: tuple[str, int, int]
) -> str:
    key, offset, length = piece
    response = await parts.client.upload_part_copy(
        Bucket=parts.bucket,
        Key=parts.key(upload_id),
        UploadId=table.upload,
        PartNumber=number,
        CopySource={"Bucket": parts.bucket, "Key": key},
        CopySourceRange=f"bytes={offset}-{offset + length - 1}",
    )
    return str(response["CopyPartResult"]["ETag"])


async def _assemble(
    parts: S3Parts,
    spool_dir: Path,
    upload_id: str,
    table: PartTable,
    number: int,
    pieces: list[tuple[str, int, int]],
) -> str:
    path = spool_dir / f"{upload_id}.concat.{number}"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        path.unlink()
        at = 0
        for key, offset, length in pieces:
            await parts.download(key, offset, length, fd, at)
            at += length
        return await parts.upload_part(upload_id, table, number, fd, at)
    finally:
        os.close(fd)
