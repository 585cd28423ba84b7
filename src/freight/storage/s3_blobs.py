"""Blobs in an S3-compatible object store, shared by every node of a fleet.

Layout
------
Under an optional key prefix, blob ``<id>`` is one S3 multipart upload of parts of a fixed
size ``P`` (``part_size``: at least 5 MiB, S3's minimum for every part but the last; by
default the smallest whole MiB, at least 8, with which 10,000 parts hold ``max_size``):
part ``n`` holds bytes ``[(n-1)·P, n·P)``. Its *part table* (:mod:`freight.storage.
s3_table`, in PostgreSQL: :mod:`freight.storage.pg_parts`) holds the multipart upload's
id, ``P``, and each uploaded part's number, size, ETag and CRC-32; it is the only source
of which bytes are stored, never ListParts (SeaweedFS lists every upload of a re-sent part
number). Bytes of a part not complete when they must become durable (a tus upload's tail,
a chunk covering part of a part) are stored as *pieces*, objects ``<id>.piece.<s>-<e>``
named in the table too, as tusd does with its ``.part`` object.

Writing
-------
``write_at`` lands in a local spool: one sparse file per part touched, in a directory per
upload under ``spool_dir``. A part complete in the spool is uploaded at once (UploadPart
streamed from its file by descriptor and offset, at most 4 in flight per writer), recorded,
and its file removed (or held a while for the running hash: see below). So when the chunk
size is the part size (:class:`~freight.core.blobs.PartSized`), each chunk goes straight
to its part and nothing is sent twice.

A checkpoint inside a request (:class:`~freight.core.blobs.SyncsThrough`: the engine
records one a part) waits for those uploads and records the bytes in whole
parts: it stores no piece, whose bytes would go up again inside their part, and it never
holds up writes. Only a request's end (commit, a dropped connection, a take-over) calls
``sync``, so a sequential request stores one tail piece at most.

``sync`` waits for those uploads, then for each other part with new bytes: if every byte
of the part is present (in the spool, or in pieces stored by any node, downloaded into the
spool file) it uploads the part whole; otherwise it stores the new ranges as pieces; both
concurrently, then recorded in one transaction. When ``sync`` returns, every byte written
is in the bucket and named by the table, so another node (its own spool, the same table
and bucket) continues exactly from the offset the engine then acknowledges.

``finish(length)`` is CompleteMultipartUpload with the table's ETags for parts
``1..⌈length/P⌉``; a part not uploaded whole (the short last one) is uploaded first from
the spool when this node has its bytes, else assembled from its pieces. A 0-byte blob is a
plain empty PutObject. Finishing again finds no table and the object of the right length,
and does nothing. Then the pieces and the table go. ``delete`` (and so expiry) aborts the
multipart upload (also one a crash left without a table row), deletes every object under
``<id>.`` and drops the table.

Concatenation (:class:`~freight.core.blobs.ServerConcat`) fills the target's parts of the
same layout from finished blobs: a part inside one source is copied by the store
(UploadPartCopy with a range), one spanning sources is assembled through the spool
(:mod:`freight.storage.s3_concat`); the parts are recorded in the table like any other.

Spool disk per upload and node: the bytes its writers hold unsynced, plus at most 4
parts in flight per writer, plus one synced partial part (the last written: a sequential
upload's tail, which its next request completes here). After a sync every other partial
part's file goes (its bytes are pieces now), as does a part's file once it is uploaded,
and the upload's directory at finish or delete. So a sequential upload takes at most
``5·P`` (4 in flight, 1 filling), whatever the blob's size and the sync interval. On top
of that, a part uploaded before the running SHA-256 reached it (it arrived out of order)
stays in the spool until the hash passes it (:class:`~freight.core.blobs.HeldRanges`): at
most ``HOLD_PARTS`` (8) such parts per upload, those nearest the hashed prefix; a part
beyond them goes at once, and finishing reads its bytes back from the finished object.
Idle spools stay for the next request of their upload within ``spool_keep_bytes`` (least
recently used out).

Considerations
--------------
* Bytes written at an offset twice are the same bytes (every protocol resends the file's
  own bytes, claims keep two writers off one range at a time, and the engine's SHA-256
  catches the rest), so a part uploaded whole is never uploaded again, and pieces of a
  part are combined in any order.
* Pieces of parts uploaded whole stay until ``finish`` or ``delete`` (another node may be
  reading them to assemble the same part).
* The S3 client and the part table live on an event loop of the store's own, in its own
  thread (:class:`~freight.storage.s3_io.StoreLoop`): the engine's async calls await it,
  writers in worker threads wait for it (a wait from a thread running a loop is refused).
  On the engine's loop, writers waiting in its executor could take every thread the HTTP
  client needs to read request bodies from the spool, and nothing would move again.
* A part (or piece) goes to the store by ``sendfile`` from its spool file (:class:`~freight.
  storage.s3_io.PartBody`): no Python copy and no thread hand-off per chunk. Its CRC-32
  is sent as ``x-amz-checksum-crc32`` (the store refuses the part if what it got differs)
  and recorded in the table: followed as the bytes are written when one writer wrote the
  part once in order, else taken in one pass over its file just before. Over plain HTTP
  payload signing and botocore's own request checksums are off. Measured per GiB (2 cores):
  a SHA-256 would cost the node 0.55 CPU-s and the store 0.6-1.0 more to verify; the CRC-32
  costs the node 0.2 and the store nothing measurable. The upload's own SHA-256 is the
  engine's, over the bytes as received.
* The spool directory belongs to one process: it is emptied on open. Losing a spool loses
  nothing recorded (synced bytes are in the bucket; unsynced ones were never recorded, so
  they are sent again).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import secrets
import shutil
import urllib.parse
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from freight.core.blobs import BlobReader, BlobWriter
from freight.errors import FreightError, StorageUnavailable
from freight.same_host import socket_for
from freight.storage.s3_concat import concatenate
from freight.storage.s3_finish import finish_blob
from freight.storage.s3_held import HeldReader
from freight.storage.s3_io import S3Reader, StoreLoop, client_error_code, s3_failure
from freight.storage.s3_models import lean_data_path
from freight.storage.s3_parts import S3Parts
from freight.storage.s3_spool import SpoolCache
from freight.storage.s3_table import BlobTable, PartTable
from freight.storage.s3_writer import FinishedWriter, S3Writer, WriterContext

__all__ = ["MAX_PARTS", "MIN_PART_SIZE", "S3Blobs", "default_part_size"]

T = TypeVar("T")

MIN_PART_SIZE = 5 * 1024 * 1024
MAX_PARTS = 10_000
_MIB = 1024 * 1024
# Idle spools kept for the next request of their upload on this node (least recent out).
DEFAULT_SPOOL_KEEP = 256 * 1024 * 1024
PARALLEL_PARTS = 4


def default_part_size(max_size: int) -> int:
    """The smallest whole MiB, at least 8, with which ``MAX_PARTS`` parts hold
    ``max_size`` bytes."""
    return max(8 * _MIB, math.ceil(max_size / MAX_PARTS / _MIB) * _MIB)


def checked_part_size(part_size: int | None, max_size: int) -> int:
    part_size = part_size or default_part_size(max_size)
    if part_size < MIN_PART_SIZE:
        raise ValueError(f"part_size must be at least {MIN_PART_SIZE}")
    if part_size * MAX_PARTS < max_size:
        raise ValueError(f"{MAX_PARTS} parts of {part_size} bytes cannot hold {max_size}")
    return part_size


class S3Blobs:
    """The :class:`~freight.core.blobs.BlobStore` over one bucket and a part table (see
    the module doc). Its S3 client and table live on a :class:`~freight.storage.s3_io.
    StoreLoop` of their own; it owns all three and closes them."""

    def __init__(
        self,
        store_loop: StoreLoop,
        client: Any,
        exit_stack: contextlib.AsyncExitStack,
        bucket: str,
        spool_dir: Path,
        table: PartTable,
        *,
        part_size: int,
        prefix: str = "",
        spool_keep_bytes: int = DEFAULT_SPOOL_KEEP,
    ) -> None:
        self._loop = store_loop
        self._client = client
        self._stack = exit_stack
        self.bucket = bucket
        self.prefix = prefix
        self.part_size = part_size
        self.spool_dir = spool_dir
        self.table = table
        self.parts = S3Parts(client, bucket, prefix)
        self.spools = SpoolCache(spool_dir, spool_keep_bytes, part_size)
        self._writers = WriterContext(
            self.parts, table, store_loop, self.spools.release, PARALLEL_PARTS
        )

    @classmethod
    async def open(
        cls,
        *,
        endpoint: str,
        access_key: str,
        secret_key: str,
        bucket: str,
        spool_dir: Path,
        open_table: Callable[[], Awaitable[PartTable]],
        max_size: int,
        region: str = "us-east-1",
        prefix: str = "",
        part_size: int | None = None,
        max_connections: int = 16,
        spool_keep_bytes: int = DEFAULT_SPOOL_KEEP,
        call_timeout: float = 600.0,
        botocore_data: Path | None = None,
    ) -> S3Blobs:
        """Open the store; ``open_table`` opens its part table (it runs on the store's
        loop, where the table then lives). ``botocore_data`` is where the lean copies of
        botocore's data are kept (:mod:`.s3_models`: an S3 client then costs 3 MiB of
        memory instead of 14); without it the client loads botocore's own."""
        part_size = checked_part_size(part_size, max_size)
        plain_http = endpoint.startswith("http://")
        config = AioConfig(
            signature_version="s3v4",
            s3={"addressing_style": "path", "payload_signing_enabled": not plain_http},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            retries={"max_attempts": 4, "mode": "standard"},
            max_pool_connections=max_connections,
            # A store on this host is reached without paced sends (freight.same_host).
            connector_args={"socket_factory": socket_for},
        )
        botocore_session = get_session()
        if botocore_data is not None:
            lean = await asyncio.to_thread(lean_data_path, botocore_data)
            if lean is not None:
                botocore_session.get_component("data_loader").search_paths.insert(0, str(lean))
        session = botocore_session.create_client(
            "s3",
            endpoint_url=endpoint,
            region_name=region,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            config=config,
            verify=False if plain_http else None,
        )

        async def clients() -> tuple[Any, contextlib.AsyncExitStack, PartTable]:
            async with contextlib.AsyncExitStack() as stack:
                client = await stack.enter_async_context(session)
                table = await open_table()
                stack.push_async_callback(table.close)
                return client, stack.pop_all(), table

        store_loop = StoreLoop(call_timeout)
        try:
            client, stack, table = await store_loop.call(clients())
        except BaseException:
            store_loop.stop()
            raise
        shutil.rmtree(spool_dir, ignore_errors=True)
        spool_dir.mkdir(parents=True, exist_ok=True)
        return cls(
            store_loop,
            client,
            stack,
            bucket,
            spool_dir,
            table,
            part_size=part_size,
            prefix=prefix,
            spool_keep_bytes=spool_keep_bytes,
        )

    async def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Await ``coroutine`` on the store's loop (where its client and table live)."""
        try:
            return await self._loop.call(coroutine)
        except Exception as exc:
            raise s3_failure(exc) from exc

    async def load_table(self, upload_id: str) -> BlobTable | None:
        """The blob's part table (for checks and diagnostics)."""
        return await self.call(self.table.load(upload_id))

    # the port --------------------------------------------------------------------------

    async def create(self, upload_id: str) -> None:
        await self.call(self._create(self.parts.key(upload_id), upload_id))

    async def _create(self, key: str, upload_id: str) -> None:
        if await self.table.load(upload_id) is not None:
            raise FreightError("a blob with this id exists already")
        created = await self._client.create_multipart_upload(Bucket=self.bucket, Key=key)
        try:
            made = await self.table.create(upload_id, created["UploadId"], self.part_size)
        except BaseException:
            # Not recorded (the database failed, the caller gave up): nothing names it.
            await asyncio.shield(self.parts.abort(key, created["UploadId"]))
            raise
        if not made:  # created meanwhile by another node
            await self.parts.abort(key, created["UploadId"])
            raise FreightError("a blob with this id exists already")

    async def open_writer(self, upload_id: str) -> BlobWriter:
        table = await self.call(self._writer_table(self.parts.key(upload_id), upload_id))
        if table is None:
            return FinishedWriter()
        return S3Writer(self._writers, upload_id, self.spools.acquire(upload_id), table)

    async def _writer_table(self, key: str, upload_id: str) -> BlobTable | None:
        table = await self.table.load(upload_id)
        if table is None:
            # Finished in the store, maybe not yet in the record: the finish is redone.
            await self._client.head_object(Bucket=self.bucket, Key=key)
        return table

    async def open_reader(self, upload_id: str) -> BlobReader:
        key = self.parts.key(upload_id)
        head = await self.call(self._client.head_object(Bucket=self.bucket, Key=key))
        return S3Reader(self._loop, self._client, self.bucket, key, int(head["ContentLength"]))

    async def finish(self, upload_id: str, length: int) -> None:
        self.parts.key(upload_id)
        await self.call(
            finish_blob(self.parts, self.table, self.spools, self.spool_dir, upload_id, length)
        )
        self.spools.forget(upload_id)

    async def delete(self, upload_id: str) -> None:
        await self.call(self._delete(self.parts.key(upload_id), upload_id))
        self.spools.forget(upload_id)

    async def _delete(self, key: str, upload_id: str) -> None:
        table = await self.table.load(upload_id)
        if table is not None:
            await self.parts.abort(key, table.upload)
        # An upload created just before a crash may have no table row.
        listing = await self._client.list_multipart_uploads(Bucket=self.bucket, Prefix=key)
        for upload in listing.get("Uploads", []):
            if upload["Key"] == key:
                await self.parts.abort(key, upload["UploadId"])
        await self.table.drop(upload_id)
        await self.parts.delete_prefixed(key + ".")
        await self.parts.delete_keys([key])

    async def free_bytes(self) -> int | None:
        return None

    async def probe(self) -> None:
        await self.call(self._probe())

    async def _probe(self) -> None:
        # The bucket (some stores create a missing one on the first PUT), then a write: a
        # bucket that answers but takes no writes (read-only credentials, a full cluster)
        # is not ready. No upload id starts with a dot. Then the part table's database.
        key = f"{self.prefix}.ready-{secrets.token_hex(8)}"
        try:
            await self._client.head_bucket(Bucket=self.bucket)
            await self._client.put_object(Bucket=self.bucket, Key=key, Body=b"ready\n")
            await self._client.delete_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            reason = client_error_code(exc) or type(exc).__name__
            raise StorageUnavailable(f"the object store takes no writes: {reason}") from exc
        await self.table.load("probe")

    async def close(self) -> None:
        try:
            await self._loop.call(self._stack.aclose())
        finally:
            self._loop.stop()

    # abilities -------------------------------------------------------------------------

    async def concatenate(self, upload_id: str, part_ids: Sequence[str]) -> None:
        self.parts.key(upload_id)
        await self.call(concatenate(self.parts, self.table, self.spool_dir, upload_id, part_ids))

    def open_held_reader(self, upload_id: str) -> HeldReader:
        """Recorded bytes of an unfinished blob this node can read before finishing it (see
        :mod:`.s3_held`)."""
        self.parts.key(upload_id)
        return HeldReader(
            self.spools.peek(upload_id), self._loop, self.parts, self.table, upload_id
        )

    def hashed_through(self, upload_id: str, offset: int) -> None:
        spool = self.spools.peek(upload_id)
        if spool is not None:
            spool.hashed_through(offset)

    async def presign_download(
        self, upload_id: str, *, expires_in: int, filename: str | None
    ) -> str:
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": self.parts.key(upload_id)}
        if filename is not None:
            params["ResponseContentDisposition"] = _attachment(filename)
        url: str = await self.call(
            self._client.generate_presigned_url("get_object", Params=params, ExpiresIn=expires_in)
        )
        return url


def _attachment(filename: str) -> str:
    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in filename)
    quoted = urllib.parse.quote(filename, safe="")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quoted}"
