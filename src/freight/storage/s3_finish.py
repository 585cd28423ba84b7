"""Finishing an S3 blob: CompleteMultipartUpload with the part table's ETags (see
:mod:`freight.storage.s3_blobs`); runs on the store's loop."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from freight.core.rangeset import RangeSet
from freight.errors import FreightError
from freight.storage.s3_io import client_error_code
from freight.storage.s3_parts import MISSING, S3Parts
from freight.storage.s3_spool import SpoolCache
from freight.storage.s3_table import BlobTable, PartRow, PartTable

__all__ = ["check_finished", "finish_blob"]


async def finish_blob(
    parts: S3Parts,
    tables: PartTable,
    spools: SpoolCache,
    spool_dir: Path,
    upload_id: str,
    length: int,
) -> None:
    key = parts.key(upload_id)
    table = await tables.load(upload_id)
    if table is None:
        await check_finished(parts, key, length)
        return
    if length == 0:
        await parts.client.put_object(Bucket=parts.bucket, Key=key, Body=b"")
        await parts.abort(key, table.upload)
    else:
        final = _Final(parts, tables, spools, spool_dir, upload_id, table)
        etags = await final.etags(length)
        try:
            await parts.client.complete_multipart_upload(
                Bucket=parts.bucket,
                Key=key,
                UploadId=table.upload,
                MultipartUpload={"Parts": etags},
            )
        except Exception as exc:
            if client_error_code(exc) not in MISSING:
                raise
            await check_finished(parts, key, length)  # a finish that was cut short
    await parts.delete_keys([parts.piece_key(upload_id, p.start, p.end) for p in table.pieces])
    await tables.drop(upload_id)


async def check_finished(parts: S3Parts, key: str, length: int) -> None:
    head = await parts.client.head_object(Bucket=parts.bucket, Key=key)
    if int(head["ContentLength"]) != length:
        raise FreightError("the finished blob has another length")


class _Final:
    def __init__(
        self,
        parts: S3Parts,
        tables: PartTable,
        spools: SpoolCache,
        spool_dir: Path,
        upload_id: str,
        table: BlobTable,
    ) -> None:
        self._parts = parts
        self._tables = tables
        self._spools = spools
        self._spool_dir = spool_dir
        self._id = upload_id
        self._table = table

    async def etags(self, length: int) -> list[dict[str, Any]]:
        """Parts ``1..⌈length/P⌉`` with their ETags, uploading any not uploaded whole
        (the short last one)."""
        size = self._table.part_size
        etags = []
        for index in range(math.ceil(length / size)):
            number = index + 1
            want = min(size, length - index * size)
            row = self._table.parts.get(number)
            if row is None or row.size != want:
                row = await self._upload(index, want)
                await self._tables.record(self._id, parts=[row])
            etags.append({"PartNumber": number, "ETag": row.etag})
        return etags

    async def _upload(self, index: int, size: int) -> PartRow:
        """Part ``index`` of ``size`` bytes: from this node's spool when it has them all,
        else assembled from pieces."""
        table, parts = self._table, self._parts
        start = index * table.part_size
        spool = self._spools.peek(self._id)
        fd = None if spool is None else spool.dup_if_covers(index, start, start + size)
        if fd is not None:
            try:
                return await parts.upload_part(self._id, table.upload, index + 1, fd, size)
            finally:
                os.close(fd)
        if not table.piece_ranges().covers(start, start + size):
            raise FreightError("the blob is incomplete: bytes are missing in the store")
        path = self._spool_dir / f"{self._id}.finish.{index}"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            path.unlink()
            wanted = RangeSet([(start, start + size)])
            await parts.fetch_pieces(self._id, table, fd, start, wanted)
            return await parts.upload_part(self._id, table.upload, index + 1, fd, size)
        finally:
            os.close(fd)
