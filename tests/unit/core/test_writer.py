"""Streaming bytes into an upload: buffers, durability, checksums, aborts, claims."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
import random
import resource
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from freight.config import FsyncPolicy
from freight.core.buffers import LARGE_BUFFER as BUFFER_SIZE
from freight.core.engine import UploadEngine
from freight.core.hash_lag import HashLag
from freight.core.session import UploadSession
from freight.core.writer import RequestChecksum
from freight.errors import (
    ChecksumMismatch,
    FreightError,
    LengthMismatch,
    OffsetMismatch,
    UploadLocked,
    UploadTooLarge,
)
from tests.unit.core.stored import local, stored_bytes

MiB = 1024 * 1024


class ConnectionDropped(Exception):
    """Stands in for a client that went away in the middle of a request body."""


def chunked(data: bytes, sizes: list[int]) -> Iterator[memoryview]:
    """``data`` cut into pieces cycling through ``sizes``."""
    view = memoryview(data)
    position, index = 0, 0
    while position < len(data):
        size = sizes[index % len(sizes)]
        yield view[position : position + size]
        position += size
        index += 1


def part_path(engine: UploadEngine, upload_id: str) -> Path:
    return local(engine).part_path(upload_id)


def part_bytes(engine: UploadEngine, upload_id: str, end: int) -> bytes:
    with part_path(engine, upload_id).open("rb") as file:
        return file.read(end)


def sha1_checksum(body: bytes) -> RequestChecksum:
    return RequestChecksum("sha1", hashlib.sha1(body).digest(), hashlib.sha1())


async def write(
    engine: UploadEngine,
    upload_id: str,
    data: bytes,
    offset: int = 0,
    *,
    sizes: tuple[int, ...] = (65536,),
    checksum: RequestChecksum | None = None,
) -> UploadSession:
    async with engine.writer(upload_id, offset, checksum=checksum) as writer:
        for piece in chunked(data, list(sizes)):
            await writer.write(piece)
        assert writer.position == offset + len(data)
        return await writer.commit(expected_end=offset + len(data))


@pytest.mark.parametrize("policy", list(FsyncPolicy))
@pytest.mark.parametrize(
    "sizes",
    [(1, 7, 4093, 65537), (BUFFER_SIZE - 1,), (BUFFER_SIZE + 1, 3), (BUFFER_SIZE,)],
    ids=["tiny-odd", "buffer-minus-one", "buffer-plus-one", "exact-buffer"],
)
@pytest.mark.local_blobs
async def test_sequential_writes_cross_the_buffer(
    open_engine: Callable[..., UploadEngine], policy: FsyncPolicy, sizes: tuple[int, ...]
) -> None:
    engine = open_engine(fsync=policy)
    data = random.Random(len(sizes)).randbytes(3 * MiB + 12345)
    session = await engine.create(length=len(data), metadata={"filename": "a.bin"})
    middle = 2 * MiB - 3
    await write(engine, session.id, data[:middle], sizes=sizes)
    session = await write(engine, session.id, data[middle:], middle, sizes=sizes)
    assert session.offset == len(data)
    session = await engine.hashed(session.id)
    assert session.hashed_offset == len(data)
    assert part_bytes(engine, session.id, len(data)) == data
    finished = await engine.finish(session.id)
    assert finished.sha256 == hashlib.sha256(data).hexdigest()
    assert await stored_bytes(engine, session.id) == data


async def test_commit_records_the_durable_offset(engine: UploadEngine) -> None:
    data = os.urandom(MiB + 100)
    session = await engine.create(length=4 * MiB, metadata={})
    await write(engine, session.id, data, sizes=(1000,))
    session = await engine.hashed(session.id)
    stored = await engine.sessions.load(session.id)
    assert stored.offset == len(data)
    assert stored.received.to_list() == [[0, len(data)]]
    assert stored.hashed_offset == len(data)
    assert stored.hash_state == session.hash_state


async def test_checkpoints_record_progress_before_commit(engine: UploadEngine) -> None:
    data = os.urandom(4 * MiB)
    session = await engine.create(length=len(data), metadata={})
    async with engine.writer(session.id, 0) as writer:
        for piece in chunked(data, [256 * 1024]):
            await writer.write(piece)
        for _ in range(200):
            if (await engine.sessions.load(session.id)).offset > 0:
                break
            await asyncio.sleep(0.01)
        recorded = (await engine.sessions.load(session.id)).offset
        assert 0 < recorded < len(data)
        assert recorded % BUFFER_SIZE == 0
        await writer.commit()
    assert (await engine.sessions.load(session.id)).offset == len(data)


async def test_empty_commit_records_nothing(engine: UploadEngine) -> None:
    session = await engine.create(length=10, metadata={})
    async with engine.writer(session.id, 0) as writer:
        await writer.write(b"")
        await writer.commit()
    assert session.offset == 0
    assert (await engine.sessions.load(session.id)).received.to_list() == []


async def test_commit_with_a_short_body_is_a_length_mismatch(engine: UploadEngine) -> None:
    session = await engine.create(length=10, metadata={})
    with pytest.raises(LengthMismatch):
        async with engine.writer(session.id, 0) as writer:
            await writer.write(b"abc")
            await writer.commit(expected_end=5)
    # The bytes that did arrive are kept, like any interrupted request.
    assert (await engine.get(session.id)).offset == 3


@pytest.mark.local_blobs
async def test_checksum_mismatch_keeps_nothing_and_leaves_the_hash_alone(
    engine: UploadEngine,
) -> None:
    data = os.urandom(2 * MiB + 777)
    head = MiB + 5
    session = await engine.create(length=len(data), metadata={})
    await write(engine, session.id, data[:head], sizes=(4096,))
    state_before = (await engine.hashed(session.id)).hash_state
    assert state_before is not None

    body = data[head:]
    corrupted = bytearray(body)
    corrupted[len(corrupted) // 2] ^= 0xFF
    with pytest.raises(ChecksumMismatch):
        async with engine.writer(session.id, head, checksum=sha1_checksum(body)) as writer:
            await writer.write(corrupted)
            await writer.commit()

    session = await engine.hashed(session.id)
    stored = await engine.sessions.load(session.id)
    for view in (session, stored):
        assert view.offset == head
        assert view.hashed_offset == head
        assert view.hash_state == state_before
    assert part_bytes(engine, session.id, head) == data[:head]

    session = await write(engine, session.id, body, head, checksum=sha1_checksum(body))
    assert session.offset == len(data)
    finished = await engine.finish(session.id)
    assert finished.sha256 == hashlib.sha256(data).hexdigest()


@pytest.mark.local_blobs
async def test_abort_keeps_what_arrived_and_resumes(engine: UploadEngine) -> None:
    data = os.urandom(5 * MiB)
    sent = 2 * MiB + MiB // 2 + 123
    session = await engine.create(length=len(data), metadata={})
    with pytest.raises(ConnectionDropped):
        async with engine.writer(session.id, 0) as writer:
            for piece in chunked(data[:sent], [65536, 3]):
                await writer.write(piece)
            raise ConnectionDropped

    session = await engine.hashed(session.id)
    assert session.offset == sent
    assert session.hashed_offset == sent
    assert (await engine.sessions.load(session.id)).offset == sent
    assert part_bytes(engine, session.id, sent) == data[:sent]

    await write(engine, session.id, data[sent:], sent)
    finished = await engine.finish(session.id)
    assert finished.sha256 == hashlib.sha256(data).hexdigest()


async def test_abort_with_a_pending_checksum_keeps_nothing(engine: UploadEngine) -> None:
    data = os.urandom(2 * MiB)
    session = await engine.create(length=len(data), metadata={})
    with pytest.raises(ConnectionDropped):
        async with engine.writer(session.id, 0, checksum=sha1_checksum(data)) as writer:
            await writer.write(data[: MiB + 10])
            raise ConnectionDropped
    assert (await engine.get(session.id)).offset == 0
    assert (await engine.sessions.load(session.id)).offset == 0


async def test_overlapping_writers_are_locked_out(engine: UploadEngine) -> None:
    session = await engine.create(length=1000, metadata={})
    async with engine.writer(session.id, 0) as writer:
        await writer.write(b"x" * 10)
        with pytest.raises(UploadLocked):
            async with engine.writer(session.id, 0):
                pass
        with pytest.raises(UploadLocked):
            async with engine.writer(session.id, 500, sequential=False, end=600):
                pass
        with pytest.raises(UploadLocked):
            await engine.delete(session.id)
        await writer.commit()

    async with engine.writer(session.id, 100, sequential=False, end=200):
        with pytest.raises(UploadLocked):
            async with engine.writer(session.id, 150, sequential=False, end=250):
                pass
        async with engine.writer(session.id, 200, sequential=False, end=300):
            pass
    # Claims are released: a sequential writer is welcome again.
    await write(engine, session.id, b"y" * 990, 10)
    async with engine.writer(session.id, 1000):
        with pytest.raises(UploadLocked):
            await engine.finish(session.id)
    assert (await engine.finish(session.id)).is_finished


@pytest.mark.local_blobs
async def test_parallel_writers_out_of_order_then_hash_catches_up(engine: UploadEngine) -> None:
    data = os.urandom(4 * MiB + 5)
    bounds = [0, MiB - 1, 2 * MiB + 3, 3 * MiB + MiB // 3, len(data)]
    ranges = list(itertools.pairwise(bounds))
    session = await engine.create(length=len(data), metadata={})

    async def send(start: int, end: int) -> None:
        async with engine.writer(session.id, start, sequential=False, end=end) as writer:
            for piece in chunked(data[start:end], [100_000]):
                await writer.write(piece)
                await asyncio.sleep(0)
            await writer.commit(expected_end=end)

    order = [2, 0, 3, 1]
    await asyncio.gather(*(send(*ranges[i]) for i in order))
    session = await engine.get(session.id)
    assert session.received.to_list() == [[0, len(data)]]
    # Ranges written without the hash are hashed from disk in the background, or at finish.
    assert session.hashed_offset <= len(data)
    assert part_bytes(engine, session.id, len(data)) == data
    finished = await engine.finish(session.id)
    assert finished.sha256 == hashlib.sha256(data).hexdigest()


@pytest.mark.local_blobs
async def test_a_writer_waits_for_a_hash_that_falls_behind(
    open_engine: Callable[..., UploadEngine], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hashing trails the writes, but never by much more than ``hash_lag``: bytes further
    behind might have left the page cache by the time the hash reaches them."""
    engine = open_engine(sync_every=MiB, fsync=FsyncPolicy.NEVER)
    assert engine.hash_lag.floor == 2 * MiB
    # No memory to spare: the bound is its floor (more memory only widens it).
    engine.hash_lag = HashLag(2 * MiB, lambda: 1, available=lambda: None)
    lag = engine.hash_lag.bound()
    hash_stored = engine.hash_follower._hash_stored

    def slow_hash(*args: Any) -> bool:
        time.sleep(0.05)
        return hash_stored(*args)

    monkeypatch.setattr(engine.hash_follower, "_hash_stored", slow_hash)
    data = os.urandom(32 * MiB)
    session = await engine.create(length=len(data), metadata={})
    widest = 0
    # Bytes left to the follower, as spliced ones are (a writer would hash these itself).
    async with engine.writer(session.id, 0, hash_inline=False) as writer:
        session = await engine.get(session.id)  # the live session, once it is being written
        for piece in chunked(data, [64 * 1024]):
            await writer.write(piece)
            await asyncio.sleep(0)  # as a socket would, let the checkpoints run
            widest = max(widest, writer.position - session.hashed_offset)
        await writer.commit()
    # Recording trails writing by up to ``sync_every`` and the staging buffers run ahead of
    # that; unbounded, the hash would trail by over 20 MiB.
    assert lag < widest <= lag + engine.sync_every + 3 * BUFFER_SIZE
    finished = await engine.finish(session.id)
    assert finished.sha256 == hashlib.sha256(data).hexdigest()


async def test_a_ranged_writer_cannot_run_past_its_end(engine: UploadEngine) -> None:
    session = await engine.create(length=100, metadata={})
    with pytest.raises(UploadTooLarge):
        async with engine.writer(session.id, 10, sequential=False, end=20) as writer:
            await writer.write(b"x" * 11)
    assert session.received.to_list() == []


async def test_offset_mismatch_carries_the_current_offset(engine: UploadEngine) -> None:
    session = await engine.create(length=100, metadata={})
    await write(engine, session.id, b"0123456789")
    for wrong in (0, 5, 11, 100):
        with pytest.raises(OffsetMismatch) as caught:
            async with engine.writer(session.id, wrong):
                pass
        assert caught.value.offset == 10
        assert caught.value.to_dict()["offset"] == 10
    with pytest.raises(OffsetMismatch) as caught:
        async with engine.writer(session.id, 101, sequential=False, end=102):
            pass
    assert caught.value.offset == 10
    # A refused writer claims nothing.
    await write(engine, session.id, b"x", 10)


@pytest.mark.local_blobs
async def test_writing_past_the_declared_length(engine: UploadEngine) -> None:
    session = await engine.create(length=10, metadata={})
    with pytest.raises(UploadTooLarge):
        async with engine.writer(session.id, 0) as writer:
            await writer.write(b"abcdef")
            await writer.write(b"ghijk")
    # The refused call wrote nothing; what came before it is kept.
    assert (await engine.get(session.id)).offset == 6
    assert part_bytes(engine, session.id, 6) == b"abcdef"
    session = await write(engine, session.id, b"ghij", 6)
    assert (await engine.finish(session.id)).sha256 == hashlib.sha256(b"abcdefghij").hexdigest()


async def test_deferred_length_writes_are_bounded_by_max_size(
    open_engine: Callable[..., UploadEngine],
) -> None:
    engine = open_engine(max_size=1000)
    session = await engine.create(length=None, metadata={})
    with pytest.raises(UploadTooLarge):
        await write(engine, session.id, b"x" * 1001)
    assert (await engine.get(session.id)).offset == 0
    await write(engine, session.id, b"x" * 1000)


@pytest.mark.local_blobs
async def test_a_failed_disk_write_never_records_misplaced_bytes(engine: UploadEngine) -> None:
    """A write that fails (here EFBIG from RLIMIT_FSIZE, a real kernel error) must not let
    later bytes of the same request land at the failed buffer's offset."""
    data = os.urandom(4 * MiB)
    session = await engine.create(length=None, metadata={})  # no preallocation
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (2 * MiB + MiB // 2, old_limit[1]))
    try:
        with pytest.raises(FreightError):
            async with engine.writer(session.id, 0) as writer:
                await writer.write(data[: 3 * MiB])
                await writer.write(data[3 * MiB : 3 * MiB + 4096])
                await writer.commit()
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)
    offset = (await engine.get(session.id)).offset
    assert offset <= 2 * MiB + MiB // 2
    assert part_bytes(engine, session.id, offset) == data[:offset]


async def test_checkpoint_makes_a_window_durable_without_ending_the_writer(
    engine: UploadEngine,
) -> None:
    data = os.urandom(3 * MiB + 123)
    session = await engine.create(length=len(data), metadata={})
    events: list[int] = []
    async with engine.writer(session.id, 0) as writer:
        await writer.write(data[: MiB + 7])
        assert await writer.checkpoint() == MiB + 7
        events.append((await engine.get(session.id)).offset)
        await writer.write(data[MiB + 7 :])
        await writer.commit()
    assert events == [MiB + 7]
    finished = await engine.finish(session.id)
    assert finished.sha256 == hashlib.sha256(data).hexdigest()


async def test_checkpoint_records_nothing_while_a_checksum_is_pending(
    engine: UploadEngine,
) -> None:
    body = os.urandom(2 * MiB)
    session = await engine.create(length=len(body), metadata={})
    async with engine.writer(session.id, 0, checksum=sha1_checksum(body)) as writer:
        await writer.write(body)
        assert await writer.checkpoint() == 0
        assert (await engine.get(session.id)).offset == 0
        await writer.commit()
    assert (await engine.get(session.id)).offset == len(body)
