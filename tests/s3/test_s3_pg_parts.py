"""S3Blobs with its part table in PostgreSQL: the table, not ListParts, is the truth; nodes
(each its own spool and pool) share bytes through the bucket and the table; a synced tail
outlives a killed node; delete leaves nothing; part-sized chunks go straight to parts."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asyncpg
import pytest

from freight.core.blobs import PartSized
from freight.errors import UploadNotFound
from freight.storage.pg_parts import open_pg_part_table
from freight.storage.s3_blobs import MIN_PART_SIZE, S3Blobs, default_part_size
from freight.storage.s3_table import PartRow, PieceRow
from tests.s3.seaweed import Seaweed
from tests.s3.stores import TEST_PART_SIZE, open_store
from tests.s3.test_s3_blobs import bucket_keys, open_uploads, read_all, write_pieces

P = TEST_PART_SIZE
MIB = 1024 * 1024


async def table_rows(dsn: str) -> int:
    connection = await asyncpg.connect(dsn)
    try:
        total = 0
        for name in ("freight_blob_uploads", "freight_blob_parts", "freight_blob_pieces"):
            total += int(await connection.fetchval(f"SELECT count(*) FROM {name}"))
        return total
    finally:
        await connection.close()


def spool_bytes(directory: Path) -> int:
    """Disk the files in ``directory`` take (uploads remove files meanwhile)."""
    total = 0
    for path in directory.iterdir():
        with contextlib.suppress(FileNotFoundError):
            total += path.stat().st_blocks * 512
    return total


async def read_object(store: S3Blobs, key: str) -> bytes:
    response = await store.parts.client.get_object(Bucket=store.bucket, Key=key)
    async with response["Body"] as stream:
        return bytes(await stream.read())


async def test_concurrent_recorders_never_lose_rows(pg_dsn: str) -> None:
    node_a, node_b = await open_pg_part_table(pg_dsn), await open_pg_part_table(pg_dsn)
    try:
        assert await node_a.create("blob", "mp-1", P)
        assert not await node_b.create("blob", "mp-2", P)

        async def recorder(table, first: int) -> None:  # type: ignore[no-untyped-def]
            for number in range(first, 200, 2):
                await table.record(
                    "blob",
                    parts=[PartRow(number, P, f'"{number}"', bytes(32))],
                    pieces=[PieceRow(number * 10, number * 10 + 5, bytes(32))],
                )

        await asyncio.gather(recorder(node_a, 1), recorder(node_b, 2))
        # A re-sent part number replaces its row.
        await node_b.record("blob", parts=[PartRow(7, P, '"again"', b"\x01" * 32)])
        table = await node_a.load("blob")
        assert table is not None
        assert table.upload == "mp-1" and table.part_size == P
        assert sorted(table.parts) == list(range(1, 200))
        assert table.parts[7] == PartRow(7, P, '"again"', b"\x01" * 32)
        assert len(table.pieces) == 199

        await node_a.drop("blob")
        assert await node_b.load("blob") is None
        with pytest.raises(UploadNotFound):
            await node_b.record("blob", parts=[PartRow(1, P, '"x"', bytes(32))])
        await node_a.drop("blob")  # unknown: not an error
    finally:
        await node_a.close()
        await node_b.close()
    assert await table_rows(pg_dsn) == 0


async def test_resent_parts_do_not_double_count(
    s3_blobs: S3Blobs, seaweed: Seaweed, s3_bucket: str, pg_dsn: str, tmp_path: Path
) -> None:
    """Two nodes upload the same part numbers: SeaweedFS lists both uploads of each, the
    table keeps one row per number (with the SHA-256 of its bytes), and finish is exact."""
    data = os.urandom(2 * P + 1000)
    await s3_blobs.create("twice")
    node_b = await open_store(seaweed, s3_bucket, tmp_path / "spool-b", pg_dsn)
    try:
        writers = [await s3_blobs.open_writer("twice"), await node_b.open_writer("twice")]
        for writer in writers:  # both opened before either recorded: both upload
            await asyncio.to_thread(writer.write_at, 0, data[: 2 * P])
            await asyncio.to_thread(writer.sync)
            await asyncio.to_thread(writer.close)
    finally:
        await node_b.close()
    table = await s3_blobs.load_table("twice")
    assert table is not None and sorted(table.parts) == [1, 2]
    for number, row in table.parts.items():
        assert row.checksum == zlib.crc32(data[(number - 1) * P : number * P]).to_bytes(4, "big")
    listed = await s3_blobs.call(
        s3_blobs.parts.client.list_parts(Bucket=s3_bucket, Key="twice", UploadId=table.upload)
    )
    # SeaweedFS lists every upload of a number (4 parts here); the table is what counts.
    assert sum(part["Size"] for part in listed["Parts"]) >= 2 * P
    assert sum(row.size for row in table.parts.values()) == 2 * P

    await write_pieces(s3_blobs, "twice", data, [(2 * P, len(data))])
    await s3_blobs.finish("twice", len(data))
    assert await read_all(s3_blobs, "twice", len(data)) == data


_NODE = textwrap.dedent(
    """
    import asyncio, os, sys, time
    from pathlib import Path
    from freight.storage.pg_parts import open_pg_part_table
    from freight.storage.s3_blobs import S3Blobs

    async def main(endpoint, key, secret, bucket, dsn, spool, size, synced):
        store = await S3Blobs.open(
            endpoint=endpoint, access_key=key, secret_key=secret, bucket=bucket,
            spool_dir=Path(spool), open_table=lambda: open_pg_part_table(dsn),
            max_size=1 << 30, part_size=5 << 20,
        )
        data = sys.stdin.buffer.read(int(size))
        writer = await store.open_writer("tail")
        for start in range(0, int(synced), 300_000):
            end = min(int(synced), start + 300_000)
            await asyncio.to_thread(writer.write_at, start, data[start:end])
        await asyncio.to_thread(writer.sync)
        # Written after the sync: never acknowledged, lost with this node.
        await asyncio.to_thread(writer.write_at, int(synced), b"\\xff" * 1000)
        print("synced", flush=True)
        time.sleep(600)

    asyncio.run(main(*sys.argv[1:]))
    """
)


async def test_synced_tail_survives_a_killed_node(
    s3_blobs: S3Blobs, seaweed: Seaweed, s3_bucket: str, pg_dsn: str, tmp_path: Path
) -> None:
    """A node process syncs mid-part and is killed (-9): the tail is in the bucket as a
    piece named by the table, and another node continues from exactly that offset."""
    data = os.urandom(2 * P + 777)
    synced = P + P // 3
    await s3_blobs.create("tail")
    args = [seaweed.endpoint, seaweed.access_key, seaweed.secret_key, s3_bucket, pg_dsn]
    node = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _NODE,
            *args,
            str(tmp_path / "spool-k"),
            str(len(data)),
            str(synced),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert node.stdin is not None and node.stdout is not None
        node.stdin.write(data)
        node.stdin.close()
        line = await asyncio.wait_for(asyncio.to_thread(node.stdout.readline), 60)
        assert line == b"synced\n"
    finally:
        node.send_signal(signal.SIGKILL)
        node.wait()
    table = await s3_blobs.load_table("tail")
    assert table is not None
    assert table.has_whole(1)
    assert table.piece_ranges().covers(P, synced)
    piece = next(p for p in table.pieces if p.end == synced)
    stored = await s3_blobs.call(
        read_object(s3_blobs, s3_blobs.parts.piece_key("tail", piece.start, piece.end))
    )
    assert stored == data[piece.start : piece.end]
    assert piece.checksum == zlib.crc32(data[piece.start : piece.end]).to_bytes(4, "big")

    node_b = await open_store(seaweed, s3_bucket, tmp_path / "spool-b", pg_dsn)
    try:
        await write_pieces(node_b, "tail", data, [(synced, len(data))])
        await node_b.finish("tail", len(data))
    finally:
        await node_b.close()
    assert await read_all(s3_blobs, "tail", len(data)) == data
    assert await bucket_keys(s3_blobs) == ["tail"]
    assert list((tmp_path / "spool-b").iterdir()) == []
    assert await table_rows(pg_dsn) == 0


@pytest.mark.parametrize("state", ["unfinished", "no-table-row"])
async def test_delete_aborts_and_leaves_nothing(
    s3_blobs: S3Blobs, pg_dsn: str, tmp_path: Path, state: str
) -> None:
    data = os.urandom(2 * P + 10)
    await s3_blobs.create("gone")
    await write_pieces(s3_blobs, "gone", data, [(0, P + 10), (2 * P, 2 * P + 10)])
    assert any(".piece." in key for key in await bucket_keys(s3_blobs))
    if state == "no-table-row":  # a node died between creating the upload and its row
        await s3_blobs.call(s3_blobs.table.drop("gone"))
    assert await open_uploads(s3_blobs) == ["gone"]
    await s3_blobs.delete("gone")
    assert await bucket_keys(s3_blobs) == []
    assert await open_uploads(s3_blobs) == []
    assert await table_rows(pg_dsn) == 0
    assert list((tmp_path / "spool-a").iterdir()) == []


async def test_part_sized_chunks_go_straight_to_parts(
    s3_blobs: S3Blobs, pg_dsn: str, tmp_path: Path
) -> None:
    """Chunks of the store's part size, written and synced by parallel writers in any
    order, become parts directly: no piece is ever stored, and the spool ends empty."""
    assert isinstance(s3_blobs, PartSized) and s3_blobs.part_size == P
    count = 6
    data = os.urandom(count * P - 4321)  # the last chunk is short
    await s3_blobs.create("chunks")
    seen: set[str] = set()
    lock = threading.Lock()

    async def chunk(number: int) -> None:
        start, end = number * P, min(len(data), (number + 1) * P)
        await write_pieces(s3_blobs, "chunks", data, [(start, end)])
        keys = await bucket_keys(s3_blobs)
        with lock:
            seen.update(keys)

    await asyncio.gather(*(chunk(n) for n in (3, 0, 5, 1, 4)))
    await chunk(2)
    table = await s3_blobs.load_table("chunks")
    assert table is not None
    assert [n for n in sorted(table.parts) if table.has_whole(n)] == [1, 2, 3, 4, 5]
    # The short last chunk is the blob's tail: stored as a piece until finish.
    assert [(p.start, p.end) for p in table.pieces] == [(5 * P, len(data))]
    assert not [
        key for key in seen if ".piece." in key and key != f"chunks.piece.{5 * P}-{len(data)}"
    ]
    await s3_blobs.finish("chunks", len(data))
    assert await read_all(s3_blobs, "chunks", len(data)) == data
    assert await bucket_keys(s3_blobs) == ["chunks"]
    assert list((tmp_path / "spool-a").iterdir()) == []
    assert await table_rows(pg_dsn) == 0


async def test_parts_ship_while_writing_and_the_spool_stays_bounded(
    s3_blobs: S3Blobs, tmp_path: Path
) -> None:
    """A long write with no sync in between: each part is uploaded and recorded once
    complete here, and its spool file goes, so the spool never holds more than the parts
    in flight and the one being filled."""
    count = 12
    seed = os.urandom(MIB)
    await s3_blobs.create("long")
    writer = await s3_blobs.open_writer("long")
    spool = tmp_path / "spool-a" / "long"
    peak = 0
    for start in range(0, count * P, MIB):
        await asyncio.to_thread(writer.write_at, start, seed)
        peak = max(peak, spool_bytes(spool))
    table = await s3_blobs.load_table("long")
    assert table is not None and len(table.parts) >= count - 5  # recorded before any sync
    await asyncio.to_thread(writer.sync)
    await asyncio.to_thread(writer.close)
    assert peak <= 5 * P + MIB, f"spool peaked at {peak / P:.1f} parts"
    table = await s3_blobs.load_table("long")
    assert table is not None and len(table.parts) == count and not table.pieces
    await s3_blobs.finish("long", count * P)
    assert list((tmp_path / "spool-a").iterdir()) == []


def test_default_part_size_covers_the_largest_upload_in_10000_parts() -> None:
    assert default_part_size(1) == 8 * MIB
    assert default_part_size(80_000 * MIB) == 8 * MIB
    assert default_part_size(80_000 * MIB + 1) == 9 * MIB
    four_tib = 4 << 40
    assert default_part_size(four_tib) * 10_000 >= four_tib
    assert default_part_size(four_tib) % MIB == 0
    assert default_part_size(four_tib) - MIB < four_tib / 10_000
    assert default_part_size(1) >= MIN_PART_SIZE


async def test_a_part_size_too_small_for_the_largest_upload_is_refused(
    seaweed: Seaweed, s3_bucket: str, pg_dsn: str, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="cannot hold"):
        await open_store(seaweed, s3_bucket, tmp_path / "s", pg_dsn, max_size=10_000 * P + 1)
    store = await open_store(
        seaweed, s3_bucket, tmp_path / "s", pg_dsn, max_size=100_000 * MIB, part_size=None
    )
    try:
        assert store.part_size == 10 * MIB
    finally:
        await store.close()


async def test_writers_do_not_starve_the_store_of_threads(
    seaweed: Seaweed, s3_bucket: str, pg_dsn: str, tmp_path: Path
) -> None:
    """The engine runs writers in the loop's default executor. Syncs that fill it wait
    for uploads, and the HTTP client reads request bodies in an executor too: if that were
    the same one, nothing would ever move again."""
    loop = asyncio.get_running_loop()
    executor = ThreadPoolExecutor(max_workers=2)
    loop.set_default_executor(executor)
    store = await open_store(seaweed, s3_bucket, tmp_path / "spool", pg_dsn, call_timeout=20)
    try:
        data = os.urandom(P // 2)
        names = ["busy0", "busy1"]
        for name in names:
            await store.create(name)
        await asyncio.wait_for(
            asyncio.gather(*(write_pieces(store, name, data, [(0, len(data))]) for name in names)),
            60,
        )
        for name in names:
            await store.finish(name, len(data))
            assert await read_all(store, name, len(data)) == data
    finally:
        await store.close()
        executor.shutdown(wait=False)


async def test_writes_in_any_order_do_not_pile_up_partial_parts(
    s3_blobs: S3Blobs, tmp_path: Path
) -> None:
    """Requests of 3/4 of a part each, every other one first, one writer each: every
    synced partial part but the last one written is left to its pieces, so the spool
    stays near one part however many parts are begun and not complete."""
    step = P * 3 // 4
    count = 16
    size = count * step
    data = os.urandom(size)
    order = [*range(0, count, 2), *range(1, count, 2)]
    await s3_blobs.create("shuffled")
    spool = tmp_path / "spool-a" / "shuffled"
    peak = 0
    for n in order:
        await write_pieces(s3_blobs, "shuffled", data, [(n * step, (n + 1) * step)])
        peak = max(peak, spool_bytes(spool))
    assert peak <= 2 * P, f"spool peaked at {peak / P:.1f} parts"
    await s3_blobs.finish("shuffled", size)
    assert await read_all(s3_blobs, "shuffled", size) == data
    assert list((tmp_path / "spool-a").iterdir()) == []
