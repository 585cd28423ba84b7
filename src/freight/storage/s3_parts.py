"""The objects of S3 blobs: keys, parts and pieces (every call here runs on the store's
event loop; see :mod:`freight.storage.s3_blobs` for the layout)."""

from __future__ import annotations

import asyncio
import base64
import os
import re
from typing import Any

from freight.core.rangeset import RangeSet
from freight.errors import FreightError, UploadNotFound
from freight.storage.s3_io import PartBody, client_error_code, window_crc32
from freight.storage.s3_table import BlobTable, PartRow, PieceRow

__all__ = ["MISSING", "S3Parts"]

_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
MISSING = ("NoSuchKey", "NoSuchUpload", "404")


class S3Parts:
    """One bucket's objects of blobs, named under ``prefix``."""

    def __init__(self, client: Any, bucket: str, prefix: str) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix

    def key(self, upload_id: str) -> str:
        if not _ID.fullmatch(upload_id):
            raise UploadNotFound("no such upload")
        return self.prefix + upload_id

    def piece_key(self, upload_id: str, start: int, end: int) -> str:
        return f"{self.key(upload_id)}.piece.{start}-{end}"

    # parts and pieces ------------------------------------------------------------------

    async def put_piece(self, upload_id: str, fd: int, at: int, start: int, end: int) -> PieceRow:
        """Store bytes ``[start, end)`` of the blob, found at ``at`` of ``fd``."""
        crc = await asyncio.to_thread(window_crc32, fd, at, end - start)
        await self.client.put_object(
            Bucket=self.bucket,
            Key=self.piece_key(upload_id, start, end),
            Body=PartBody(fd, at, end - start),
            ContentLength=end - start,
            ChecksumCRC32=base64.b64encode(crc).decode(),
        )
        return PieceRow(start, end, crc)

    async def upload_part(
        self,
        upload_id: str,
        multipart: str,
        number: int,
        fd: int,
        size: int,
        crc: bytes | None = None,
    ) -> PartRow:
        """Upload the first ``size`` bytes of ``fd`` as part ``number``; ``crc``: their
        CRC-32 if the caller followed it as they were written (else read here). A wrong one
        costs a refused upload, never a wrong part: the store checks it."""
        if crc is None:
            crc = await asyncio.to_thread(window_crc32, fd, 0, size)
        response = await self.client.upload_part(
            Bucket=self.bucket,
            Key=self.key(upload_id),
            UploadId=multipart,
            PartNumber=number,
            Body=PartBody(fd, 0, size),
            ContentLength=size,
            ChecksumCRC32=base64.b64encode(crc).decode(),
        )
        return PartRow(number, size, str(response["ETag"]), crc)

    async def fetch_pieces(
        self, upload_id: str, table: BlobTable, fd: int, base: int, wanted: RangeSet
    ) -> None:
        """Download the ``wanted`` absolute ranges from pieces into ``fd`` (which holds
        bytes from ``base``)."""
        for piece in table.pieces:
            for want_start, want_end in wanted:
                lo, hi = max(piece.start, want_start), min(piece.end, want_end)
                if lo < hi:
                    key = self.piece_key(upload_id, piece.start, piece.end)
                    await self.download(key, lo - piece.start, hi - lo, fd, lo - base)

    async def download(self, key: str, offset: int, size: int, fd: int, at: int) -> None:
        response = await self.client.get_object(
            Bucket=self.bucket, Key=key, Range=f"bytes={offset}-{offset + size - 1}"
        )
        async with response["Body"] as body:
            while size > 0:
                chunk = await body.read(min(size, 1 << 20))
                if not chunk:
                    raise FreightError("a piece of the blob is shorter than recorded")
                # Page-cache writes of at most 1 MiB: brief enough for the loop thread.
                view = memoryview(chunk)
                while view:
                    written = os.pwrite(fd, view, at)
                    view = view[written:]
                    at += written
                size -= len(chunk)

    async def abort(self, key: str, upload: str) -> None:
        try:
            await self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload)
        except Exception as exc:
            if client_error_code(exc) not in MISSING:
                raise

    async def delete_prefixed(self, prefix: str) -> None:
        paginator = self.client.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            await self.delete_keys([item["Key"] for item in page.get("Contents", [])])

    async def delete_keys(self, keys: list[str]) -> None:
        for key in keys:
            await self.client.delete_object(Bucket=self.bucket, Key=key)
