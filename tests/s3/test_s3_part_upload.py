"""How a part leaves the spool: by sendfile, not read in pieces through worker threads;
with a CRC-32 the store verifies and the table records; and the part table's move from a
SHA-256 column to that checksum keeps the rows it had."""

from __future__ import annotations

import asyncio
import os
import threading
import zlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from freight.errors import FreightError
from freight.storage.pg_parts import _MIGRATIONS, COMPONENT, open_pg_part_table
from freight.storage.pg_pool import PoolSettings
from freight.storage.pg_schema import ensure_schema
from freight.storage.s3_blobs import S3Blobs
from freight.storage.s3_io import PartBody, window_crc32
from freight.storage.s3_table import PartRow, PieceRow
from tests.s3.stores import TEST_PART_SIZE
from tests.s3.test_s3_blobs import read_all, write_pieces

P = TEST_PART_SIZE


class CountingExecutor(ThreadPoolExecutor):
    def __init__(self) -> None:
        super().__init__(max_workers=4)
        self.count = 0
        self._lock = threading.Lock()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        with self._lock:
            self.count += 1
        return super().submit(fn, *args, **kwargs)


async def test_parts_go_out_without_a_thread_hand_off_per_chunk(s3_blobs: S3Blobs) -> None:
    """aiohttp reads a file body 128 KiB at a time in its loop's executor: ~40 hand-offs
    per 5 MiB part, each waking a thread and taking the GIL back (with the read and send
    copies about 0.6 CPU-s per GiB). A part body goes by sendfile: one hand-off per part,
    its checksum pass."""
    executor = CountingExecutor()

    async def use_counting_executor() -> None:
        asyncio.get_running_loop().set_default_executor(executor)

    await s3_blobs.call(use_counting_executor())
    data = os.urandom(3 * P + 1000)
    await s3_blobs.create("sent")
    await write_pieces(s3_blobs, "sent", data, [(0, len(data))])
    uploads = 4  # three whole parts and the tail's piece
    assert executor.count <= 2 * uploads, executor.count
    await s3_blobs.finish("sent", len(data))
    assert await read_all(s3_blobs, "sent", len(data)) == data


async def write_in_order(store: S3Blobs, upload_id: str, writes: list[tuple[int, bytes]]) -> None:
    """``writes`` through one writer (one request), then its sync."""
    writer = await store.open_writer(upload_id)
    try:
        for at, data in writes:
            await asyncio.to_thread(writer.write_at, at, data)
        await asyncio.to_thread(writer.sync)
    finally:
        await asyncio.to_thread(writer.close)


@pytest.mark.parametrize("order", ["rewritten", "backwards", "in_order"])
async def test_the_crc_a_part_is_sent_with_is_its_bytes_crc(s3_blobs: S3Blobs, order: str) -> None:
    """The CRC-32 followed as a writer writes is the part's only if the writer wrote it
    once, in order: bytes written over (a request whose checksum failed, sent again) or
    out of order make the part checksummed from its file. A wrong CRC would make the store
    refuse the part (BadDigest), failing the write."""
    good = os.urandom(2 * P)
    writes = {
        "rewritten": [(0, os.urandom(1000)), (0, good[: P + 7]), (P + 7, good[P + 7 :])],
        "backwards": [(P // 2, good[P // 2 : P]), (0, good[: P // 2]), (P, good[P:])],
        "in_order": [(at, good[at : at + 4096]) for at in range(0, 2 * P, 4096)],
    }[order]
    await s3_blobs.create(order)
    await write_in_order(s3_blobs, order, writes)
    table = await s3_blobs.load_table(order)
    assert table is not None and sorted(table.parts) == [1, 2]
    for number, row in table.parts.items():
        part = good[(number - 1) * P : number * P]
        assert row.checksum == zlib.crc32(part).to_bytes(4, "big")
    await s3_blobs.finish(order, len(good))
    assert await read_all(s3_blobs, order, len(good)) == good


async def test_the_store_refuses_a_part_whose_crc_differs(
    s3_blobs: S3Blobs, tmp_path: Path
) -> None:
    await s3_blobs.create("refused")
    table = await s3_blobs.load_table("refused")
    assert table is not None
    path = tmp_path / "part"
    path.write_bytes(os.urandom(P))
    fd = os.open(path, os.O_RDONLY)
    try:
        wrong = s3_blobs.parts.upload_part("refused", table.upload, 1, fd, P, bytes(4))
        with pytest.raises(FreightError, match="BadDigest"):
            await s3_blobs.call(wrong)
        right = await s3_blobs.call(s3_blobs.parts.upload_part("refused", table.upload, 1, fd, P))
        assert right.checksum == zlib.crc32(path.read_bytes()).to_bytes(4, "big")
    finally:
        os.close(fd)


async def test_a_part_past_the_end_of_its_file_is_sent_with_zeros(
    s3_blobs: S3Blobs, tmp_path: Path
) -> None:
    """sendfile stops at the end of the file: the rest of the body goes as zeros (as the
    checksum counts them), never a body shorter than its Content-Length."""
    await s3_blobs.create("short")
    table = await s3_blobs.load_table("short")
    assert table is not None
    path = tmp_path / "part"
    path.write_bytes(os.urandom(P - 1000))
    fd = os.open(path, os.O_RDONLY)
    try:
        upload = s3_blobs.parts.upload_part("short", table.upload, 1, fd, P)
        row = await asyncio.wait_for(s3_blobs.call(upload), 60)
    finally:
        os.close(fd)
    assert row.checksum == zlib.crc32(path.read_bytes() + bytes(1000)).to_bytes(4, "big")


def test_window_crc32_reads_holes_as_zeros(tmp_path: Path) -> None:
    path = tmp_path / "sparse"
    with path.open("wb") as file:
        file.write(b"head")
        file.seek(300_000)
        file.write(b"tail")
    fd = os.open(path, os.O_RDONLY)
    try:
        whole = path.read_bytes()
        assert window_crc32(fd, 0, len(whole)) == zlib.crc32(whole).to_bytes(4, "big")
        beyond = whole[2:] + bytes(10)  # past the end of the file: zeros too
        assert window_crc32(fd, 2, len(beyond)) == zlib.crc32(beyond).to_bytes(4, "big")
    finally:
        os.close(fd)


class ListWriter:
    """A stream writer that is not aiohttp's (as over TLS: no sendfile)."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    async def write(self, chunk: bytes) -> None:
        self.chunks.append(bytes(chunk))


async def test_a_part_body_without_sendfile_is_read_in_pieces(tmp_path: Path) -> None:
    data = os.urandom(700_000)
    path = tmp_path / "part"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        body = PartBody(fd, 1000, 600_000)
        writer = ListWriter()
        await body.write_with_length(writer, None)  # type: ignore[arg-type]
        assert b"".join(writer.chunks) == data[1000:601_000]
        assert max(len(chunk) for chunk in writer.chunks) < 128 * 1024
        # What botocore reads when it signs a payload, then rewinds.
        assert body.read(10) == data[1000:1010]
        body.seek(0)
        assert body.read() == data[1000:601_000]
    finally:
        os.close(fd)


async def test_tables_of_the_sha256_version_keep_their_rows(pg_dsn: str) -> None:
    connection = await asyncpg.connect(pg_dsn)
    try:
        await ensure_schema(connection, COMPONENT, _MIGRATIONS[:1])
        await connection.execute(
            "INSERT INTO freight_blob_uploads VALUES ('old', 'multipart', $1)", P
        )
        await connection.execute(
            "INSERT INTO freight_blob_parts VALUES ('old', 1, $1, '\"e\"', $2)", P, b"s" * 32
        )
        await connection.execute(
            "INSERT INTO freight_blob_pieces VALUES ('old', $1, $2, $3)", P, P + 5, b"p" * 32
        )
    finally:
        await connection.close()
    table = await open_pg_part_table(pg_dsn)
    try:
        loaded = await table.load("old")
    finally:
        await table.close()
    assert loaded is not None
    assert loaded.parts[1].checksum == b"s" * 32
    assert [piece.checksum for piece in loaded.pieces] == [b"p" * 32]


async def test_recording_a_part_is_one_statement(pg_dsn: str) -> None:
    """A shipped part is recorded once a part: BEGIN, the insert, COMMIT and the pool's
    reset query on release were four round trips (and four queries for the server)."""
    table = await open_pg_part_table(pg_dsn, PoolSettings(min_size=1, max_size=1))
    try:
        assert await table.create("logged", "multipart", P)
        sent: list[str] = []
        async with table._pool.acquire() as connection:
            connection.add_query_logger(lambda record: sent.append(record.query))
        await table.record("logged", parts=[PartRow(1, P, '"e"', bytes(4))])
        await table.record("logged", pieces=[PieceRow(P, P + 5, bytes(4))])
        assert len(sent) == 2, sent
        loaded = await table.load("logged")
        assert loaded is not None and sorted(loaded.parts) == [1] and len(loaded.pieces) == 1
    finally:
        await table.close()
