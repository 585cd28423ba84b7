"""S3Blobs against a real SeaweedFS: writes in any order, cross-node continue, finish,
ranged reads, delete, presigned URLs and memory."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
from pathlib import Path

import aiohttp
import psutil
import pytest

from freight.core.blobs import BlobStore, Presigner, ServerConcat
from freight.errors import FreightError, UploadNotFound
from freight.storage.s3_blobs import S3Blobs
from tests.s3.seaweed import Seaweed
from tests.s3.stores import TEST_PART_SIZE, open_store

P = TEST_PART_SIZE


def pieces_of(size: int, rng: random.Random) -> list[tuple[int, int]]:
    """``[start, end)`` pieces covering ``size``: whole parts and odd-sized bits."""
    pieces, at = [], 0
    while at < size:
        step = P if rng.random() < 0.4 else rng.randint(1, P + P // 2)
        pieces.append((at, min(size, at + step)))
        at += step
    return pieces


async def write_pieces(store: S3Blobs, upload_id: str, data: bytes, pieces) -> None:
    writer = await store.open_writer(upload_id)
    try:
        for start, end in pieces:
            await asyncio.to_thread(writer.write_at, start, memoryview(data)[start:end])
        await asyncio.to_thread(writer.sync)
    finally:
        await asyncio.to_thread(writer.close)


async def read_all(store: BlobStore, upload_id: str, size: int, step: int = 1_000_003) -> bytes:
    reader = await store.open_reader(upload_id)
    out, buffer = bytearray(), bytearray(step)
    try:
        while True:
            got = await asyncio.to_thread(reader.read_into, len(out), memoryview(buffer))
            if not got:
                break
            out += buffer[:got]
    finally:
        reader.close()
    assert len(out) == size
    return bytes(out)


async def bucket_keys(store: S3Blobs) -> list[str]:
    listing = await store.call(store.parts.client.list_objects_v2(Bucket=store.bucket))
    return sorted(item["Key"] for item in listing.get("Contents", []))


async def open_uploads(store: S3Blobs) -> list[str]:
    listing = await store.call(store.parts.client.list_multipart_uploads(Bucket=store.bucket))
    return [u["Key"] for u in listing.get("Uploads", [])]


async def test_random_order_writes_continue_on_another_node(
    s3_blobs: S3Blobs, seaweed: Seaweed, s3_bucket: str, pg_dsn: str, tmp_path: Path
) -> None:
    rng = random.Random(7)
    size = 3 * P + P // 2 + 123
    data = rng.randbytes(size)
    pieces = pieces_of(size, rng)
    rng.shuffle(pieces)
    half = len(pieces) // 2
    await s3_blobs.create("up1")
    await write_pieces(s3_blobs, "up1", data, pieces[:half])

    node_b = await open_store(seaweed, s3_bucket, tmp_path / "spool-b", pg_dsn)
    try:
        await write_pieces(node_b, "up1", data, pieces[half:])
        await node_b.finish("up1", size)
    finally:
        await node_b.close()

    assert hashlib.sha256(await read_all(s3_blobs, "up1", size)).digest() == (
        hashlib.sha256(data).digest()
    )
    await s3_blobs.finish("up1", size)  # again: nothing to do
    # The record may not know yet that the store finished it: it opens, for finish to redo.
    writer = await s3_blobs.open_writer("up1")
    await asyncio.to_thread(writer.sync)
    writer.close()
    await s3_blobs.finish("up1", size)
    assert await bucket_keys(s3_blobs) == ["up1"]
    assert await open_uploads(s3_blobs) == []
    assert list((tmp_path / "spool-a").iterdir()) == []


async def test_synced_tail_survives_a_lost_node(
    s3_blobs: S3Blobs, seaweed: Seaweed, s3_bucket: str, pg_dsn: str, tmp_path: Path
) -> None:
    """Node A syncs a sequential upload mid-part and vanishes (spool and all); node B
    continues from the synced offset and finishes."""
    data = os.urandom(2 * P + 777)
    synced = P + P // 3
    await s3_blobs.create("tail")
    writer = await s3_blobs.open_writer("tail")
    for start in range(0, synced, 256 * 1024):
        end = min(synced, start + 256 * 1024)
        await asyncio.to_thread(writer.write_at, start, data[start:end])
    await asyncio.to_thread(writer.sync)
    # Written after the sync and lost with node A: never recorded, so sent again.
    await asyncio.to_thread(writer.write_at, synced, b"\xff" * 1000)
    await asyncio.to_thread(writer.close)

    node_b = await open_store(seaweed, s3_bucket, tmp_path / "spool-b", pg_dsn)
    try:
        await write_pieces(node_b, "tail", data, [(synced, len(data))])
    finally:
        await node_b.close()
    await s3_blobs.finish("tail", len(data))
    assert await read_all(s3_blobs, "tail", len(data)) == data


async def test_two_nodes_share_a_part_concurrently(
    s3_blobs: S3Blobs, seaweed: Seaweed, s3_bucket: str, pg_dsn: str, tmp_path: Path
) -> None:
    """Two chunks of one part written and synced at the same time on two nodes: the
    conditional table update keeps both, and the part is uploaded whole by one of them."""
    data = os.urandom(2 * P)
    await s3_blobs.create("shared")
    node_b = await open_store(seaweed, s3_bucket, tmp_path / "spool-b", pg_dsn)
    try:
        cut = P // 2 + 5
        await asyncio.gather(
            write_pieces(s3_blobs, "shared", data, [(0, cut), (P, P + cut)]),
            write_pieces(node_b, "shared", data, [(cut, P), (P + cut, 2 * P)]),
        )
        table = await s3_blobs.load_table("shared")
        assert table is not None
        covered = table.piece_ranges()
        for number in (1, 2):
            assert table.has_whole(number) or covered.covers((number - 1) * P, number * P)
    finally:
        await node_b.close()
    await s3_blobs.finish("shared", len(data))
    assert await read_all(s3_blobs, "shared", len(data)) == data


@pytest.mark.parametrize("size", [0, 1, 1000, P - 1, P])
async def test_small_blobs(s3_blobs: S3Blobs, size: int) -> None:
    data = os.urandom(size)
    await s3_blobs.create("small")
    await write_pieces(s3_blobs, "small", data, [(0, size)] if size else [])
    await s3_blobs.finish("small", size)
    await s3_blobs.finish("small", size)
    assert await read_all(s3_blobs, "small", size) == data
    reader = await s3_blobs.open_reader("small")
    assert await asyncio.to_thread(reader.read_into, size + 10, memoryview(bytearray(8))) == 0
    assert await bucket_keys(s3_blobs) == ["small"]


async def test_finish_refuses_missing_bytes(s3_blobs: S3Blobs) -> None:
    data = os.urandom(P + 100)
    await s3_blobs.create("gap")
    await write_pieces(s3_blobs, "gap", data, [(0, P), (P + 50, P + 100)])
    with pytest.raises(FreightError, match="incomplete"):
        await s3_blobs.finish("gap", len(data))
    with pytest.raises(UploadNotFound):
        await s3_blobs.open_reader("gap")


@pytest.mark.parametrize("finished", [False, True])
async def test_delete_removes_everything(s3_blobs: S3Blobs, finished: bool) -> None:
    data = os.urandom(2 * P + 10)
    await s3_blobs.create("gone")
    await write_pieces(s3_blobs, "gone", data, [(0, P + 10), (2 * P, 2 * P + 10)])
    assert len(await bucket_keys(s3_blobs)) >= 2  # pieces
    if finished:
        await write_pieces(s3_blobs, "gone", data, [(P + 10, 2 * P)])
        await s3_blobs.finish("gone", len(data))
    await s3_blobs.delete("gone")
    assert await bucket_keys(s3_blobs) == []
    assert await open_uploads(s3_blobs) == []
    await s3_blobs.delete("gone")  # unknown now: not an error
    with pytest.raises(UploadNotFound):
        await s3_blobs.open_writer("gone")


@pytest.mark.parametrize("bad", ["../x", "a/b", "", "x" * 129, "a.piece", "ok\n", "é"])
async def test_hostile_ids_are_refused(s3_blobs: S3Blobs, bad: str) -> None:
    for call in (
        s3_blobs.create(bad),
        s3_blobs.open_writer(bad),
        s3_blobs.open_reader(bad),
        s3_blobs.finish(bad, 1),
        s3_blobs.delete(bad),
    ):
        with pytest.raises(UploadNotFound):
            await call
    assert await bucket_keys(s3_blobs) == []


async def test_sync_on_the_loop_thread_is_refused(s3_blobs: S3Blobs) -> None:
    await s3_blobs.create("loop")
    writer = await s3_blobs.open_writer("loop")
    writer.write_at(0, b"abc")
    with pytest.raises(RuntimeError, match="worker threads"):
        writer.sync()
    await asyncio.to_thread(writer.sync)
    writer.close()


async def test_presigned_get_with_a_filename(s3_blobs: S3Blobs) -> None:
    assert isinstance(s3_blobs, Presigner)
    data = os.urandom(100_000)
    await s3_blobs.create("signed")
    await write_pieces(s3_blobs, "signed", data, [(0, len(data))])
    await s3_blobs.finish("signed", len(data))
    url = await s3_blobs.presign_download("signed", expires_in=60, filename="résumé 1.bin")
    async with aiohttp.ClientSession() as http:
        async with http.get(url) as response:
            assert response.status == 200
            assert await response.read() == data
            assert (
                "filename*=UTF-8''r%C3%A9sum%C3%A9%201.bin"
                in (response.headers["Content-Disposition"])
            )
        async with http.get(url.replace("signed", "other", 1)) as response:
            assert response.status == 403


@pytest.mark.slow
async def test_large_blob_memory_and_spool_stay_bounded(s3_blobs: S3Blobs, tmp_path: Path) -> None:
    size = 64 * 1024 * 1024 + 12345
    piece = 1024 * 1024
    seed = os.urandom(piece)
    expected = hashlib.sha256()
    await s3_blobs.create("big")
    writer = await s3_blobs.open_writer("big")
    process = psutil.Process()
    rss_before = process.memory_info().rss
    peak_rss, peak_spool = 0, 0
    spool = tmp_path / "spool-a" / "big"
    for start in range(0, size, piece):
        chunk = memoryview(seed)[: min(piece, size - start)]
        expected.update(chunk)
        await asyncio.to_thread(writer.write_at, start, chunk)
        if (start // piece) % 8 == 7:
            await asyncio.to_thread(writer.sync)
            peak_spool = max(peak_spool, sum(f.stat().st_blocks * 512 for f in spool.iterdir()))
            peak_rss = max(peak_rss, process.memory_info().rss)
    await asyncio.to_thread(writer.sync)
    await asyncio.to_thread(writer.close)
    await s3_blobs.finish("big", size)
    growth = peak_rss - rss_before
    assert growth < 48 * 1024 * 1024, f"RSS grew by {growth / 2**20:.1f} MiB"
    assert peak_spool <= 2 * P
    reader = await s3_blobs.open_reader("big")
    actual, buffer = hashlib.sha256(), bytearray(4 * 1024 * 1024)
    at = 0
    while got := await asyncio.to_thread(reader.read_into, at, memoryview(buffer)):
        actual.update(memoryview(buffer)[:got])
        at += got
    assert at == size
    assert actual.digest() == expected.digest()


@pytest.mark.parametrize(
    "sizes",
    [[P + 100, 3, 2 * P + 7], [1000, 0, 5, P // 2, P // 2], [P, P]],
    ids=["copy-and-assemble", "tiny", "aligned"],
)
async def test_server_side_concatenation(s3_blobs: S3Blobs, sizes: list[int]) -> None:
    assert isinstance(s3_blobs, ServerConcat)
    sources = [os.urandom(size) for size in sizes]
    for number, data in enumerate(sources):
        await s3_blobs.create(f"src{number}")
        await write_pieces(s3_blobs, f"src{number}", data, [(0, len(data))] if data else [])
        await s3_blobs.finish(f"src{number}", len(data))
    total = sum(sizes)
    await s3_blobs.create("final")
    await s3_blobs.concatenate("final", [f"src{n}" for n in range(len(sources))])
    await s3_blobs.finish("final", total)
    assert await read_all(s3_blobs, "final", total) == b"".join(sources)
    with pytest.raises(UploadNotFound):
        await s3_blobs.concatenate("final2", ["src0"])


async def test_next_request_on_the_same_node_completes_parts_from_its_spool(
    s3_blobs: S3Blobs,
) -> None:
    """Sequential requests (one writer each) on one node: the part begun by the first is
    completed from the spool, not by downloading the pieces the first one stored. The
    pieces are removed behind the store's back to prove it."""
    data = os.urandom(P + 1000)
    await s3_blobs.create("seq")
    await write_pieces(s3_blobs, "seq", data, [(0, P // 2)])
    pieces = [key for key in await bucket_keys(s3_blobs) if ".piece." in key]
    assert pieces
    for key in pieces:
        await s3_blobs.call(s3_blobs.parts.client.delete_object(Bucket=s3_blobs.bucket, Key=key))
    await write_pieces(s3_blobs, "seq", data, [(P // 2, len(data))])
    await s3_blobs.finish("seq", len(data))
    assert await read_all(s3_blobs, "seq", len(data)) == data


async def test_idle_spools_are_kept_within_their_budget(
    seaweed: Seaweed, s3_bucket: str, pg_dsn: str, tmp_path: Path
) -> None:
    store = await open_store(seaweed, s3_bucket, tmp_path / "spool", pg_dsn, spool_keep_bytes=P)
    try:
        for name in ("one", "two", "three"):
            await store.create(name)
            await write_pieces(store, name, os.urandom(P // 2 + 1), [(0, P // 2 + 1)])
        kept = sorted(path.name for path in (tmp_path / "spool").iterdir())
        assert kept == ["three"]
        await store.delete("three")
        assert list((tmp_path / "spool").iterdir()) == []
    finally:
        await store.close()
