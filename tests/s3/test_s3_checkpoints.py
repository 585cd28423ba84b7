"""Checkpoints on S3 blobs: inside a request they record whole shipped parts only (no
piece objects: a piece's bytes go up again inside their part), a request's end stores its
tail, and syncing never holds up writes."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from freight.core.engine import UploadEngine
from freight.core.ports import Backend
from freight.errors import FreightError
from freight.storage.local_sessions import SqliteSessions
from freight.storage.s3_blobs import S3Blobs
from freight.storage.s3_writer import S3Writer
from tests.s3.seaweed import Seaweed
from tests.s3.stores import TEST_PART_SIZE, open_store
from tests.s3.test_s3_blobs import read_all

P = TEST_PART_SIZE
MIB = 1024 * 1024


@pytest.fixture
async def engine(
    seaweed: Seaweed, s3_bucket: str, pg_dsn: str, tmp_path: Path
) -> AsyncIterator[UploadEngine]:
    store = await open_store(seaweed, s3_bucket, tmp_path / "spool", pg_dsn)
    sessions = SqliteSessions(tmp_path / "freight.db")
    # One part between checkpoints, as a fleet's server sets it (storage.choice).
    engine = UploadEngine(Backend(sessions=sessions, blobs=store), sync_every=P)
    try:
        yield engine
    finally:
        await engine.close()


async def test_mid_request_checkpoints_record_whole_parts_and_store_no_pieces(
    engine: UploadEngine,
) -> None:
    """A request that starts inside a part (the previous one stored its tail) writes on
    for three parts: it records whole parts meanwhile, the only pieces
    ever stored are the two requests' tails, and the blob comes out right."""
    store = engine.blobs
    assert isinstance(store, S3Blobs)
    data = os.urandom(4 * P)
    session = await engine.create(length=len(data), metadata={})
    first = MIB + 12345
    async with engine.writer(session.id, 0) as writer:
        await writer.write(data[:first])
        await writer.commit()

    tail_end = 3 * P + 777
    async with engine.writer(session.id, first) as writer:
        for at in range(first, tail_end, 256 * 1024):
            await writer.write(data[at : min(at + 256 * 1024, tail_end)])
        deadline = time.monotonic() + 60
        while (await engine.sessions.load(session.id)).offset < P:
            assert time.monotonic() < deadline, "nothing recorded mid-request"
            await asyncio.sleep(0.05)
        table = await store.load_table(session.id)
        assert table is not None
        assert [(p.start, p.end) for p in table.pieces] == [(0, first)]
        await writer.commit()
    assert (await engine.sessions.load(session.id)).offset == tail_end
    table = await store.load_table(session.id)
    assert table is not None
    assert sorted((p.start, p.end) for p in table.pieces) == [(0, first), (3 * P, tail_end)]

    async with engine.writer(session.id, tail_end) as writer:
        await writer.write(data[tail_end:])
        await writer.commit()
    finished = await engine.finish(session.id)
    assert finished.is_finished
    got = await read_all(store, session.id, len(data))
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()


async def test_writes_go_on_while_a_sync_waits_for_the_part_table(
    s3_blobs: S3Blobs, pg_dsn: str
) -> None:
    """A sync stuck on its PostgreSQL write (the table locked by someone else) leaves the
    writer free: another thread's write lands at once, and the sync ends once the table
    is free again."""
    await s3_blobs.create("busy")
    writer = await s3_blobs.open_writer("busy")
    assert isinstance(writer, S3Writer)
    await asyncio.to_thread(writer.write_at, 0, os.urandom(MIB))
    locker = await asyncpg.connect(pg_dsn)
    transaction = locker.transaction()
    await transaction.start()
    await locker.execute("LOCK TABLE freight_blob_pieces IN ACCESS EXCLUSIVE MODE")
    syncing = asyncio.ensure_future(asyncio.to_thread(writer.sync))
    try:
        await asyncio.sleep(0.5)
        assert not syncing.done()
        started = time.monotonic()
        wrote = threading.Event()
        await asyncio.wait_for(
            asyncio.to_thread(lambda: (writer.write_at(MIB, os.urandom(MIB)), wrote.set())), 10
        )
        assert wrote.is_set() and time.monotonic() - started < 5
        assert not syncing.done()
    finally:
        await transaction.rollback()
        await locker.close()
        await asyncio.wait_for(syncing, 30)
    await asyncio.to_thread(writer.sync)
    await asyncio.to_thread(writer.close)
    table = await s3_blobs.load_table("busy")
    assert table is not None
    assert table.piece_ranges().covers(0, 2 * MIB)


async def test_creating_an_existing_blob_leaves_no_second_multipart_upload(
    s3_blobs: S3Blobs,
) -> None:
    await s3_blobs.create("twice")
    with pytest.raises(FreightError, match="exists already"):
        await s3_blobs.create("twice")
    listing = await s3_blobs.call(
        s3_blobs.parts.client.list_multipart_uploads(Bucket=s3_blobs.bucket)
    )
    table = await s3_blobs.load_table("twice")
    assert table is not None
    assert [(u["Key"], u["UploadId"]) for u in listing.get("Uploads", [])] == [
        ("twice", table.upload)
    ]


async def test_a_create_that_fails_to_record_leaves_no_multipart_upload(
    s3_blobs: S3Blobs, pg_dsn: str
) -> None:
    """The part table cannot take the new row (locked here) and the caller gives up: the
    multipart upload just made is aborted, not left for nobody to find."""
    locker = await asyncpg.connect(pg_dsn)
    transaction = locker.transaction()
    await transaction.start()
    await locker.execute("LOCK TABLE freight_blob_uploads IN EXCLUSIVE MODE")
    try:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(s3_blobs.create("stuck"), 3)
    finally:
        await transaction.rollback()
        await locker.close()
    deadline = time.monotonic() + 10
    while True:
        listing = await s3_blobs.call(
            s3_blobs.parts.client.list_multipart_uploads(Bucket=s3_blobs.bucket)
        )
        if not listing.get("Uploads") or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert listing.get("Uploads", []) == []
    assert await s3_blobs.load_table("stuck") is None


def _spool_bytes(directory: Path) -> int:
    total = 0
    for path in list(directory.glob("*")):
        with contextlib.suppress(FileNotFoundError):  # uploaded and removed meanwhile
            total += path.stat().st_blocks * 512
    return total


async def test_the_spool_holds_at_most_five_parts_per_writer_and_empties(
    engine: UploadEngine, tmp_path: Path
) -> None:
    """The bound: a sequential writer's spool holds the parts in flight (4), the one
    waiting for room and the one filling, never more than 5 parts' worth at once since
    the one waiting stops the filling; a dropped request leaves its tail (at most a part)
    for the next request, and delete or finish leave nothing."""
    count = 14
    seed = os.urandom(MIB)
    spool_root = tmp_path / "spool"
    peak = 0
    stop = threading.Event()

    def watch(directory: Path) -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, _spool_bytes(directory))
            time.sleep(0.005)

    for ending in ("dropped", "finished"):
        session = await engine.create(length=count * P + 99, metadata={})
        watcher = threading.Thread(target=watch, args=(spool_root / session.id,))
        watcher.start()
        try:
            async with engine.writer(session.id, 0) as writer:
                for _ in range(count * P // MIB):
                    await writer.write(seed)
                if ending == "dropped":
                    await writer.write(seed[:99])
                    await writer.settle()
                else:
                    await writer.write(seed[:99])
                    await writer.commit()
        finally:
            stop.set()
            watcher.join()
            stop.clear()
        assert peak <= 5 * P + MIB, f"spool peaked at {peak / P:.2f} parts"
        peak = 0
        if ending == "dropped":
            # The request ended without commit: what arrived is kept, its tail is a
            # piece in the bucket and its part stays in the spool for the next request.
            assert (await engine.get(session.id)).offset == count * P + 99
            assert _spool_bytes(spool_root / session.id) <= P
            await engine.delete(session.id)
        else:
            await engine.finish(session.id)
        assert not (spool_root / session.id).exists() or not list(
            (spool_root / session.id).iterdir()
        )


async def test_parallel_chunks_of_one_upload_store_no_pieces(engine: UploadEngine) -> None:
    """Four requests write four parts of one upload at once (the chunk API with four
    streams): one ending syncs its own part only, not the parts the others are still
    filling, so no piece is ever stored but the upload's short tail."""
    store = engine.blobs
    assert isinstance(store, S3Blobs)
    data = os.urandom(4 * P - 1000)
    session = await engine.create(length=len(data), metadata={})
    step = 512 * 1024
    halfway = [asyncio.Event() for _ in range(4)]
    first_done = asyncio.Event()

    async def chunk(n: int) -> None:
        start, end = n * P, min(len(data), (n + 1) * P)
        # As the chunk API writes a chunk with a digest: whole or not at all.
        async with engine.writer(
            session.id, start, end=end, sequential=False, all_or_nothing=True
        ) as writer:
            for at in range(start, end, step):
                if n and at - start >= P // 2:
                    halfway[n].set()
                    await first_done.wait()  # the first request ends meanwhile
                await writer.write(data[at : min(at + step, end)])
            if n == 0:
                for event in halfway[1:]:
                    await event.wait()
            await writer.commit()
        if n == 0:
            first_done.set()

    await asyncio.wait_for(asyncio.gather(*(chunk(n) for n in range(4))), 120)
    table = await store.load_table(session.id)
    assert table is not None
    assert [(p.start, p.end) for p in table.pieces] == [(3 * P, len(data))]
    await engine.finish(session.id)
    got = await read_all(store, session.id, len(data))
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
