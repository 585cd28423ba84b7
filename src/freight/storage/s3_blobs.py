"""Blobs in an S3-compatible object store, shared by every node of a fleet.

Layout
------
Under an optional key prefix, blob ``<id>`` uses these objects:

* ``<id>``: the finished object. Until :meth:`S3Blobs.finish` it is an S3 multipart upload
  of parts of a fixed size ``P`` (``part_size``, at least 5 MiB: S3's minimum for every
  part but the last); part ``n`` holds bytes ``[(n-1)·P, n·P)``.
* ``<id>.state``: the part table (JSON): the multipart upload's id, ``P``, every uploaded
  part's number, ETag and size, and the byte ranges stored as fragments. Every change is a
  conditional PUT (``If-Match``), so writers on several nodes never lose each other's
  parts. It is ours and not ListParts because SeaweedFS keeps every version of a re-uploaded
  part (ListParts overcounts) and omits part checksums.
* ``<id>.frag.<start>-<end>``: bytes ``[start, end)`` of a part that was not complete when
  they had to become durable (the tail of a tus upload, a chunk that covers part of a part).

Writing
-------
``write_at`` lands in a local spool: one sparse file per part touched, in a directory per
upload under ``spool_dir`` (``pwrite`` at the offset within the part); a part's file is
removed once the part is uploaded, so the disk it takes is bounded by the parts in flight,
not by the blob's size. An upload's writers on one node share its spool, and it is kept a
while after the last closes (``spool_keep_bytes`` of idle spools, least recently used out):
the next request of a sequential upload completes its part from local bytes.

``sync`` then, for each part with new bytes: if every byte of the part is present (written
here, or stored as fragments by any node, which it downloads into the spool file) it uploads
the whole part with UploadPart, streamed from the spool file in the HTTP client's small
reads; otherwise it stores the new ranges as fragment objects. Then it records the change in
the part table. When ``sync`` returns, every byte written is in the bucket and named by the
table, so another node can open a writer and continue from the offset the engine recorded.

``finish(length)`` completes the multipart upload with parts ``1..⌈length/P⌉``: parts not
uploaded whole (the short last part, or the only part of a blob smaller than ``P``) are
assembled from their fragments first. A 0-byte blob is a plain empty PutObject. Finishing
again finds the table gone and the object of the right length, and does nothing. Then the
fragments and the table are deleted.

Concatenation (:class:`~freight.core.blobs.ServerConcat`) fills the target's parts of the
same fixed layout from finished blobs: a part inside one source is copied by the store
(UploadPartCopy with a range), one spanning sources is assembled through the spool
(:mod:`freight.storage.s3_concat`).

Considerations
--------------
* Bytes written at an offset twice are the same bytes (every protocol resends the file's
  own bytes, claims keep two writers off one range at a time, and the engine's SHA-256
  catches the rest), so a part uploaded whole is never uploaded again, and fragments of
  a part are combined in any order.
* Fragments of parts uploaded whole stay until ``finish`` or ``delete`` (another node may
  be reading them to assemble the same part); the bucket briefly holds those bytes twice.
* Two nodes completing the same part at once upload the same bytes under the same number;
  whichever ETag the table keeps names identical content.
* The writer's methods are synchronous and run in worker threads; aiobotocore is async and
  its client belongs to the loop that opened the store. Each S3 call from a worker is
  handed to that loop (``run_coroutine_threadsafe``) and the worker waits; a call from the
  loop's own thread is refused rather than deadlocked.
* Over plain HTTP, payload signing and default request checksums are off: hashing each
  part costs more CPU than the upload itself, and integrity is checked end to end by the
  engine's SHA-256 of the finished blob.
* The spool directory belongs to one process: it is emptied on open. Losing a spool loses
  nothing recorded (synced bytes are in the bucket; unsynced ones were never recorded, so
  they are sent again); without it a part is completed from its fragments, downloaded.
* At most 10,000 parts: ``P`` bounds the blob size (16 MiB → 156 GiB).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from freight.core.blobs import BlobReader, BlobWriter
from freight.core.rangeset import RangeSet
from freight.errors import FreightError, StorageUnavailable
from freight.storage.s3_concat import concatenate
from freight.storage.s3_io import LoopBridge, S3Reader, s3_failure
from freight.storage.s3_parts import MISSING, S3Parts
from freight.storage.s3_spool import SpoolCache
from freight.storage.s3_state import PartTable, client_error_code
from freight.storage.s3_writer import FinishedWriter, S3Writer

__all__ = ["MIN_PART_SIZE", "S3Blobs"]

MIN_PART_SIZE = 5 * 1024 * 1024
DEFAULT_PART_SIZE = 16 * 1024 * 1024
# Idle spools kept for the next request of their upload on this node (least recent out).
DEFAULT_SPOOL_KEEP = 256 * 1024 * 1024


class S3Blobs:
    """The :class:`~freight.core.blobs.BlobStore` over one bucket (see the module doc)."""

    def __init__(
        self,
        client: Any,
        exit_stack: contextlib.AsyncExitStack,
        bucket: str,
        spool_dir: Path,
        *,
        prefix: str = "",
        part_size: int = DEFAULT_PART_SIZE,
        call_timeout: float = 600.0,
        spool_keep_bytes: int = DEFAULT_SPOOL_KEEP,
    ) -> None:
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {MIN_PART_SIZE}")
        self._client = client
        self._stack = exit_stack
        self.bucket = bucket
        self.prefix = prefix
        self.part_size = part_size
        self.spool_dir = spool_dir
        self.parts = S3Parts(client, bucket, prefix)
        self.bridge = LoopBridge(asyncio.get_running_loop(), call_timeout)
        self.spools = SpoolCache(spool_dir, spool_keep_bytes)

    @classmethod
    async def open(
        cls,
        *,
        endpoint: str,
        access_key: str,
        secret_key: str,
        bucket: str,
        spool_dir: Path,
        region: str = "us-east-1",
        prefix: str = "",
        part_size: int = DEFAULT_PART_SIZE,
        max_connections: int = 16,
        spool_keep_bytes: int = DEFAULT_SPOOL_KEEP,
    ) -> S3Blobs:
        plain_http = endpoint.startswith("http://")
        config = AioConfig(
            signature_version="s3v4",
            s3={"addressing_style": "path", "payload_signing_enabled": not plain_http},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            retries={"max_attempts": 4, "mode": "standard"},
            max_pool_connections=max_connections,
        )
        stack = contextlib.AsyncExitStack()
        client = await stack.enter_async_context(
            get_session().create_client(
                "s3",
                endpoint_url=endpoint,
                region_name=region,
                aws_access_key_id=access_key,
                aws_secret_access_key=secret_key,
                config=config,
            )
        )
        shutil.rmtree(spool_dir, ignore_errors=True)
        spool_dir.mkdir(parents=True, exist_ok=True)
        return cls(
            client,
            stack,
            bucket,
            spool_dir,
            prefix=prefix,
            part_size=part_size,
            spool_keep_bytes=spool_keep_bytes,
        )

    # the port --------------------------------------------------------------------------

    async def create(self, upload_id: str) -> None:
        key = self.parts.key(upload_id)
        try:
            created = await self._client.create_multipart_upload(Bucket=self.bucket, Key=key)
            table = PartTable(created["UploadId"], self.part_size)
            if not await self.parts.tables.save(
                self.parts.state_key(upload_id), table, create=True
            ):
                raise FreightError("a blob with this id exists already")
        except Exception as exc:
            raise s3_failure(exc) from exc

    async def open_writer(self, upload_id: str) -> BlobWriter:
        key = self.parts.key(upload_id)
        try:
            table = await self.parts.tables.load(self.parts.state_key(upload_id))
            if table is None:
                # Finished in the store, maybe not yet in the record: the finish is redone.
                await self.parts.client.head_object(Bucket=self.bucket, Key=key)
                return FinishedWriter()
        except Exception as exc:
            raise s3_failure(exc) from exc
        spool = self.spools.acquire(upload_id)
        return S3Writer(
            self.parts, self.bridge, self.spools.release, upload_id, spool, table.part_size
        )

    async def open_reader(self, upload_id: str) -> BlobReader:
        key = self.parts.key(upload_id)
        try:
            head = await self._client.head_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            raise s3_failure(exc) from exc
        return S3Reader(self.bridge, self._client, self.bucket, key, int(head["ContentLength"]))

    async def finish(self, upload_id: str, length: int) -> None:
        try:
            await self._finish(upload_id, length)
        except Exception as exc:
            raise s3_failure(exc) from exc
        self.spools.forget(upload_id)

    async def _finish(self, upload_id: str, length: int) -> None:
        key = self.parts.key(upload_id)
        table = await self.parts.tables.load(self.parts.state_key(upload_id))
        if table is None:
            await self._check_finished(key, length)
            return
        if length == 0:
            await self._client.put_object(Bucket=self.bucket, Key=key, Body=b"")
            await self.parts.abort(key, table.upload)
        else:
            parts = await self._final_parts(upload_id, table, length)
            try:
                await self._client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=table.upload,
                    MultipartUpload={"Parts": parts},
                )
            except Exception as exc:
                if client_error_code(exc) not in MISSING:
                    raise
                await self._check_finished(key, length)  # a finish that was cut short
        await self.parts.delete_prefixed(key + ".frag.")
        await self.parts.delete_keys([self.parts.state_key(upload_id)])

    async def _final_parts(
        self, upload_id: str, table: PartTable, length: int
    ) -> list[dict[str, Any]]:
        size = table.part_size
        parts = []
        for index in range((length + size - 1) // size):
            number = index + 1
            want = min(size, length - index * size)
            etag, got = table.parts.get(number, ("", 0))
            if got != want:
                etag = await self._assemble_part(upload_id, table, index, want)
            parts.append({"PartNumber": number, "ETag": etag})
        return parts

    async def _assemble_part(self, upload_id: str, table: PartTable, index: int, size: int) -> str:
        start = index * table.part_size
        if not table.fragment_ranges().covers(start, start + size):
            raise FreightError("the blob is incomplete: bytes are missing in the store")
        path = self.spool_dir / f"{upload_id}.finish.{index}"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            path.unlink()
            await self.parts.fetch_fragments(
                upload_id, table, fd, start, RangeSet([(start, start + size)])
            )
            return await self.parts.upload_part(upload_id, table, index + 1, fd, size)
        finally:
            os.close(fd)

    async def _check_finished(self, key: str, length: int) -> None:
        head = await self._client.head_object(Bucket=self.bucket, Key=key)
        if int(head["ContentLength"]) != length:
            raise FreightError("the finished blob has another length")

    async def delete(self, upload_id: str) -> None:
        key = self.parts.key(upload_id)
        try:
            table = await self.parts.tables.load(self.parts.state_key(upload_id))
            if table is not None:
                await self.parts.abort(key, table.upload)
            # An upload created just before a crash may have no table yet.
            listing = await self._client.list_multipart_uploads(Bucket=self.bucket, Prefix=key)
            for upload in listing.get("Uploads", []):
                if upload["Key"] == key:
                    await self.parts.abort(key, upload["UploadId"])
            await self.parts.delete_prefixed(key + ".")
            await self.parts.delete_keys([key])
        except Exception as exc:
            raise s3_failure(exc) from exc
        self.spools.forget(upload_id)

    async def free_bytes(self) -> int | None:
        return None

    async def probe(self) -> None:
        # The bucket (some stores create a missing one on the first PUT), then a write: a
        # bucket that answers but takes no writes (read-only credentials, a full cluster)
        # is not ready. No upload id starts with a dot.
        key = f"{self.prefix}.ready-{secrets.token_hex(8)}"
        try:
            await self._client.head_bucket(Bucket=self.bucket)
            await self._client.put_object(Bucket=self.bucket, Key=key, Body=b"ready\n")
            await self._client.delete_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            reason = client_error_code(exc) or type(exc).__name__
            raise StorageUnavailable(f"the object store takes no writes: {reason}") from exc

    async def close(self) -> None:
        await self._stack.aclose()

    # abilities -------------------------------------------------------------------------

    async def concatenate(self, upload_id: str, part_ids: Sequence[str]) -> None:
        try:
            await concatenate(self.parts, self.spool_dir, upload_id, part_ids)
        except Exception as exc:
            raise s3_failure(exc) from exc

    async def presign_download(
        self, upload_id: str, *, expires_in: int, filename: str | None
    ) -> str:
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": self.parts.key(upload_id)}
        if filename is not None:
            params["ResponseContentDisposition"] = _attachment(filename)
        url: str = await self._client.generate_presigned_url(
            "get_object", Params=params, ExpiresIn=expires_in
        )
        return url


def _attachment(filename: str) -> str:
    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in filename)
    quoted = urllib.parse.quote(filename, safe="")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quoted}"
