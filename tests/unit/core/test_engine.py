"""The upload engine over real backends: lengths, finishing, expiry, concatenation, restarts."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from freight.core.concat import CONSUMED_PART_GRACE
from freight.core.engine import UploadEngine
from freight.core.session import ConcatKind, UploadSession, UploadState, new_upload_id
from freight.errors import (
    ChecksumMismatch,
    ConcatenationError,
    FreightError,
    InsufficientStorage,
    LengthMismatch,
    OffsetMismatch,
    UploadExpired,
    UploadForbidden,
    UploadIncomplete,
    UploadNotFound,
    UploadTooLarge,
)
from tests.unit.core.stored import local, stored_bytes

MiB = 1024 * 1024
OpenEngine = Callable[..., UploadEngine]
Restart = Callable[..., Awaitable[UploadEngine]]


@dataclass
class FakeClock:
    now: float = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def write(
    engine: UploadEngine,
    upload_id: str,
    data: bytes,
    offset: int = 0,
    *,
    sequential: bool = True,
) -> UploadSession:
    end = None if sequential else offset + len(data)
    async with engine.writer(upload_id, offset, end=end, sequential=sequential) as writer:
        for start in range(0, len(data), 256 * 1024):
            await writer.write(data[start : start + 256 * 1024])
        return await writer.commit(expected_end=offset + len(data))


async def upload(
    engine: UploadEngine, data: bytes, *, concat_kind: ConcatKind | None = None
) -> UploadSession:
    session = await engine.create(length=len(data), metadata={}, concat_kind=concat_kind)
    await write(engine, session.id, data)
    return await engine.finish(session.id)


async def gone(engine: UploadEngine, upload_id: str) -> bool:
    try:
        await engine.get(upload_id)
    except UploadNotFound:
        return True
    return False


async def assert_parts_retired(engine: UploadEngine, part_ids: list[str]) -> None:
    """Used parts stay for a grace period (a retried final creation needs them), then go."""
    for part_id in part_ids:
        part = await engine.get(part_id)
        assert part.expires is not None
        assert part.expires <= engine.clock() + CONSUMED_PART_GRACE
    now = engine.clock()
    engine.clock = lambda: now + CONSUMED_PART_GRACE + 1
    assert await engine.sweep_expired() >= len(part_ids)
    for part_id in part_ids:
        assert await gone(engine, part_id)
        with pytest.raises(UploadNotFound):
            await engine.blobs.open_reader(part_id)


async def wait_assembled(
    engine: UploadEngine, final_id: str, part_ids: list[str], timeout: float = 10.0
) -> UploadSession:
    """Poll until background assembly has finished the final and retired its parts."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        final = await engine.get(final_id)
        parts = [await engine.get(pid) for pid in part_ids]
        if final.is_finished and all(p.expires is not None for p in parts):
            return final
        assert asyncio.get_running_loop().time() < deadline, "the final was never assembled"
        await asyncio.sleep(0.01)


# creating and lengths -----------------------------------------------------------------------


@pytest.mark.local_blobs
async def test_create_stores_the_session_and_its_part(open_engine: OpenEngine) -> None:
    clock = FakeClock()
    engine = open_engine(clock=clock, expire_after=60.0)
    metadata: dict[str, str | None] = {"filename": "résumé.pdf", "flag": None}
    session = await engine.create(length=1000, metadata=metadata)
    assert session.state is UploadState.RECEIVING
    assert (session.offset, session.length, session.name) == (0, 1000, "résumé.pdf")
    assert (session.created, session.expires) == (clock.now, clock.now + 60.0)
    assert (await engine.sessions.load(session.id)) == session
    assert local(engine).part_path(session.id).exists()
    assert [s.id for s in await engine.list_sessions()] == [session.id]
    with pytest.raises(UploadIncomplete):
        await engine.open_reader(session)


@pytest.mark.local_blobs
async def test_declare_length_rules(engine: UploadEngine) -> None:
    session = await engine.create(length=None, metadata={})
    await write(engine, session.id, b"x" * 100)
    with pytest.raises(LengthMismatch):
        await engine.declare_length(session.id, 99)
    declared = await engine.declare_length(session.id, 150)
    assert declared.length == 150
    assert (await engine.sessions.load(session.id)).length == 150
    # Space is taken as bytes arrive: declaring a length preallocates nothing.
    assert os.stat(local(engine).part_path(session.id)).st_size == 100
    assert (await engine.declare_length(session.id, 150)).length == 150  # idempotent
    with pytest.raises(LengthMismatch):
        await engine.declare_length(session.id, 151)
    with pytest.raises(UploadTooLarge):
        await write(engine, session.id, b"y" * 51, 100)
    await write(engine, session.id, b"y" * 50, 100)
    finished = await engine.finish(session.id)
    assert finished.sha256 == sha256(b"x" * 100 + b"y" * 50)


async def test_declaring_exactly_what_arrived_completes(engine: UploadEngine) -> None:
    session = await engine.create(length=None, metadata={})
    await write(engine, session.id, b"abc")
    assert not session.is_complete
    with pytest.raises(UploadIncomplete):
        await engine.finish(session.id)
    await engine.declare_length(session.id, 3)
    assert (await engine.finish(session.id)).sha256 == sha256(b"abc")


async def test_max_size(open_engine: OpenEngine) -> None:
    engine = open_engine(max_size=1000)
    with pytest.raises(UploadTooLarge) as caught:
        await engine.create(length=1001, metadata={})
    assert caught.value.details["max_size"] == 1000
    assert await engine.list_sessions() == []
    deferred = await engine.create(length=None, metadata={})
    with pytest.raises(UploadTooLarge):
        await engine.declare_length(deferred.id, 1001)
    assert (await engine.declare_length(deferred.id, 1000)).length == 1000


@pytest.mark.local_blobs
async def test_disk_reserve_beyond_free_space(tmp_path: Path, open_engine: OpenEngine) -> None:
    huge = shutil.disk_usage(tmp_path).free + 2**40
    engine = open_engine(disk_reserve=huge)
    with pytest.raises(InsufficientStorage) as caught:
        await engine.create(length=1, metadata={})
    # How much is free is the operator's business: neither told nor hinted at.
    assert "free" not in caught.value.details
    assert not any(c.isdigit() for c in caught.value.message)
    assert await engine.list_sessions() == []
    assert list(local(engine).uploads_dir.iterdir()) == []
    deferred = await engine.create(length=None, metadata={})
    with pytest.raises(InsufficientStorage):
        await engine.declare_length(deferred.id, 1)


async def test_length_larger_than_the_disk(engine: UploadEngine, tmp_path: Path) -> None:
    with pytest.raises(InsufficientStorage):
        await engine.create(length=shutil.disk_usage(tmp_path).total * 2, metadata={})


# finishing ------------------------------------------------------------------------------------


async def test_finish_incomplete_lists_the_missing_ranges(engine: UploadEngine) -> None:
    session = await engine.create(length=40, metadata={})
    await write(engine, session.id, b"a" * 10, 0, sequential=False)
    await write(engine, session.id, b"b" * 10, 20, sequential=False)
    with pytest.raises(UploadIncomplete) as caught:
        await engine.finish(session.id)
    assert caught.value.details["missing"] == [[10, 20], [30, 40]]


@pytest.mark.local_blobs
async def test_finish_with_the_wrong_sha256_keeps_the_upload(
    engine: UploadEngine, restart: Restart
) -> None:
    data = os.urandom(MiB + 3)
    session = await engine.create(length=len(data), metadata={})
    await write(engine, session.id, data)
    with pytest.raises(ChecksumMismatch) as caught:
        await engine.finish(session.id, expected_sha256="0" * 64)
    assert caught.value.details["sha256"] == sha256(data)
    kept = await engine.get(session.id)
    assert kept.state is UploadState.RECEIVING and kept.offset == len(data)
    assert (await engine.sessions.load(session.id)).state is UploadState.RECEIVING
    assert local(engine).part_path(session.id).exists()

    engine = await restart(engine)
    finished = await engine.finish(session.id, expected_sha256=sha256(data).upper())
    assert finished.sha256 == sha256(data)
    assert finished.expires is None
    assert (await engine.finish(session.id)).sha256 == sha256(data)  # finishing twice is fine
    with pytest.raises(ChecksumMismatch):
        await engine.finish(session.id, expected_sha256="f" * 64)


@pytest.mark.local_blobs
async def test_finished_uploads_are_renamed_and_frozen(engine: UploadEngine) -> None:
    data = b"hello freight"
    session = await upload(engine, data)
    store = local(engine)
    assert not store.part_path(session.id).exists()
    assert store.file_path(session.id).read_bytes() == data
    assert (await engine.sessions.load(session.id)).state is UploadState.FINISHED
    file = await engine.open_reader(session)
    try:
        buffer = bytearray(64)
        assert file.read_into(0, memoryview(buffer)) == len(data)
    finally:
        file.close()
    with pytest.raises(OffsetMismatch):
        async with engine.writer(session.id, len(data)):
            pass


async def test_an_empty_upload_finishes(engine: UploadEngine) -> None:
    session = await engine.create(length=0, metadata={})
    assert session.is_complete
    finished = await engine.finish(session.id)
    assert finished.sha256 == sha256(b"")
    assert await stored_bytes(engine, session.id) == b""


@pytest.mark.local_blobs
async def test_delete(engine: UploadEngine) -> None:
    receiving = await engine.create(length=10, metadata={})
    finished = await upload(engine, b"done")
    for session in (receiving, finished):
        await engine.delete(session.id)
        with pytest.raises(UploadNotFound):
            await engine.get(session.id)
        assert not local(engine).part_path(session.id).exists()
        assert not local(engine).file_path(session.id).exists()
    with pytest.raises(UploadNotFound):
        await engine.delete(receiving.id)


@pytest.mark.local_blobs
async def test_delete_while_the_hash_catches_up(
    engine: UploadEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The background hash saves the session as it goes; it must not bring a deleted upload
    back."""
    hashing = asyncio.Event()
    hash_stored = engine.hash_follower._hash_stored
    loop = asyncio.get_running_loop()

    def slow_hash(*args: Any) -> bool:
        loop.call_soon_threadsafe(hashing.set)
        time.sleep(0.2)
        return hash_stored(*args)

    monkeypatch.setattr(engine.hash_follower, "_hash_stored", slow_hash)
    session = await engine.create(length=2 * MiB, metadata={})
    # Bytes left to the follower, as spliced ones are (a writer would hash these itself).
    async with engine.writer(session.id, 0, hash_inline=False) as writer:
        await writer.write(os.urandom(MiB))
        await writer.commit()
    await asyncio.wait_for(hashing.wait(), 5)
    await engine.delete(session.id)
    await asyncio.sleep(0.3)  # past the end of the hashing under way
    with pytest.raises(UploadNotFound):
        (await engine.sessions.load(session.id))
    assert await engine.list_sessions() == []


@pytest.mark.parametrize("bad", ["../x", "a/b", "", "x" * 200, "..", "a.part"])
async def test_ids_that_are_not_ours_are_not_found(engine: UploadEngine, bad: str) -> None:
    for attempt in (engine.get, engine.delete, engine.finish):
        with pytest.raises(UploadNotFound):
            await attempt(bad)
    with pytest.raises(UploadNotFound):
        async with engine.writer(bad, 0):
            pass


async def test_rewriting_hashed_bytes_never_leaves_a_wrong_sha256(engine: UploadEngine) -> None:
    session = await engine.create(length=10, metadata={})
    await write(engine, session.id, b"AAAAA", 0, sequential=False)
    try:
        await write(engine, session.id, b"BBBBBBBB", 2, sequential=False)
    except FreightError:
        await write(engine, session.id, b"BBBBB", 5, sequential=False)  # refusing is fine too
    finished = await engine.finish(session.id)
    assert finished.sha256 == sha256(await stored_bytes(engine, session.id))


async def test_a_length_declared_during_a_write_bounds_it(engine: UploadEngine) -> None:
    session = await engine.create(length=None, metadata={})
    data = os.urandom(100)
    try:
        async with engine.writer(session.id, 0) as writer:
            await writer.write(data)
            with contextlib.suppress(FreightError):  # refusing while a writer runs is fine
                await engine.declare_length(session.id, 50)
            await writer.write(b"!")
            await writer.commit()
    except FreightError:
        pass  # so is refusing the writer's bytes past the new length
    session = await engine.get(session.id)
    if session.length is None:
        await engine.declare_length(session.id, session.offset)
    assert session.length is not None
    assert session.received.highest() <= session.length
    finished = await engine.finish(session.id)
    stored = await stored_bytes(engine, session.id)
    assert len(stored) == finished.length
    assert finished.sha256 == sha256(stored)


# expiry ---------------------------------------------------------------------------------------


@pytest.mark.local_blobs
async def test_expiry_with_a_fake_clock(open_engine: OpenEngine) -> None:
    clock = FakeClock()
    engine = open_engine(clock=clock, expire_after=60.0)
    done = await upload(engine, b"kept forever")
    session = await engine.create(length=10, metadata={})
    clock.advance(50)
    await write(engine, session.id, b"12345")
    # writing keeps an upload alive
    assert (await engine.get(session.id)).expires == clock.now + 60.0
    assert (await engine.sessions.load(session.id)).expires == clock.now + 60.0
    clock.advance(59)
    assert (await engine.get(session.id)).offset == 5
    assert await engine.sweep_expired() == 0

    clock.advance(2)
    with pytest.raises(UploadExpired):
        await engine.get(session.id)
    with pytest.raises(UploadExpired):
        async with engine.writer(session.id, 5):
            pass
    with pytest.raises(UploadExpired):
        await engine.finish(session.id)
    assert (await engine.get(done.id)).is_finished

    assert await engine.sweep_expired() == 1
    assert not local(engine).part_path(session.id).exists()
    with pytest.raises(UploadNotFound):
        (await engine.sessions.load(session.id))
    with pytest.raises(UploadNotFound):
        await engine.get(session.id)
    assert await engine.sweep_expired() == 0
    assert (await engine.get(done.id)).sha256 == sha256(b"kept forever")


async def test_sweep_spares_an_upload_being_written(open_engine: OpenEngine) -> None:
    clock = FakeClock()
    engine = open_engine(clock=clock, expire_after=60.0)
    session = await engine.create(length=10, metadata={})
    async with engine.writer(session.id, 0) as writer:
        clock.advance(61)
        assert await engine.sweep_expired() == 0
        await writer.write(b"x")
    assert (await engine.sessions.load(session.id)).offset == 1


# concatenation --------------------------------------------------------------------------------


def concat_parts_data() -> list[bytes]:
    return [os.urandom(MiB + 11), os.urandom(7), os.urandom(2 * MiB - 5)]


async def test_concatenation_of_finished_parts(engine: UploadEngine) -> None:
    datas = concat_parts_data()
    parts = [await upload(engine, data, concat_kind=ConcatKind.PARTIAL) for data in datas]
    final = await engine.create_final([p.id for p in parts], {"filename": "all.bin"})
    assert final.state is UploadState.FINISHED
    assert final.concat_kind is ConcatKind.FINAL
    assert final.length == sum(map(len, datas))
    assert final.sha256 == sha256(b"".join(datas))
    assert await stored_bytes(engine, final.id) == b"".join(datas)
    await assert_parts_retired(engine, [p.id for p in parts])
    with pytest.raises(UploadForbidden):
        async with engine.writer(final.id, 0):
            pass


async def test_concatenation_before_the_parts_finish(engine: UploadEngine) -> None:
    datas = concat_parts_data()
    parts = [
        await engine.create(length=len(datas[0]), metadata={}, concat_kind=ConcatKind.PARTIAL),
        await engine.create(length=None, metadata={}, concat_kind=ConcatKind.PARTIAL),
        await engine.create(length=len(datas[2]), metadata={}, concat_kind=ConcatKind.PARTIAL),
    ]
    await write(engine, parts[2].id, datas[2])
    await engine.finish(parts[2].id)
    final = await engine.create_final([p.id for p in parts], {})
    assert final.state is UploadState.ASSEMBLING
    assert final.length is None  # one part's length is still deferred
    with pytest.raises(UploadForbidden):
        async with engine.writer(final.id, 0):
            pass

    await write(engine, parts[1].id, datas[1])
    await engine.declare_length(parts[1].id, len(datas[1]))
    await engine.finish(parts[1].id)
    await write(engine, parts[0].id, datas[0])
    assert (await engine.get(final.id)).state is UploadState.ASSEMBLING
    await engine.finish(parts[0].id)

    final = await wait_assembled(engine, final.id, [p.id for p in parts])
    assert final.length == sum(map(len, datas))
    assert final.sha256 == sha256(b"".join(datas))
    assert await stored_bytes(engine, final.id) == b"".join(datas)
    await assert_parts_retired(engine, [p.id for p in parts])


async def test_concatenation_errors(engine: UploadEngine) -> None:
    plain = await upload(engine, b"not a part")
    part = await upload(engine, b"a part", concat_kind=ConcatKind.PARTIAL)
    for part_ids in ([], [plain.id], [part.id, new_upload_id()], ["../x"]):
        with pytest.raises(ConcatenationError):
            await engine.create_final(part_ids, {})
    assert (await engine.get(part.id)).is_finished  # a refused final takes no part


async def test_a_part_listed_twice(engine: UploadEngine) -> None:
    part = await upload(engine, b"abc", concat_kind=ConcatKind.PARTIAL)
    try:
        final = await engine.create_final([part.id, part.id], {})
    except ConcatenationError:
        return  # refusing repeated parts is fine too
    assert final.sha256 == sha256(b"abcabc")


# restarts -------------------------------------------------------------------------------------


async def test_state_survives_a_restart(engine: UploadEngine, restart: Restart) -> None:
    data = os.urandom(3 * MiB + 1)
    head = MiB + MiB // 2
    session = await engine.create(length=len(data), metadata={"filename": "x"})
    await write(engine, session.id, data[:head])
    engine = await restart(engine)
    resumed = await engine.get(session.id)
    assert (resumed.offset, resumed.length) == (head, len(data))
    assert resumed.metadata == {"filename": "x"}
    assert resumed.hashed_offset == head and resumed.hash_state is not None
    await write(engine, session.id, data[head:], head)
    engine = await restart(engine)
    finished = await engine.finish(session.id)
    assert finished.sha256 == sha256(data)
    engine = await restart(engine)
    assert (await engine.get(session.id)).sha256 == sha256(data)


@pytest.mark.local_blobs
async def test_restart_resumes_the_saved_hash_without_rereading(
    engine: UploadEngine, restart: Restart
) -> None:
    data = os.urandom(MiB + 99)
    session = await engine.create(length=len(data), metadata={})
    await write(engine, session.id, data)
    engine = await restart(engine)
    # Spoil the first byte on disk: a hash rebuilt from the file would notice.
    with open(local(engine).part_path(session.id), "r+b") as file:
        file.write(bytes([data[0] ^ 0xFF]))
    assert (await engine.finish(session.id)).sha256 == sha256(data)


@pytest.mark.local_blobs
async def test_resume_interrupted_work_finishes_complete_uploads(
    engine: UploadEngine, restart: Restart
) -> None:
    data = os.urandom(MiB + 1)
    complete = await engine.create(length=len(data), metadata={})
    await write(engine, complete.id, data)
    partial = await engine.create(length=len(data), metadata={})
    await write(engine, partial.id, data[:100])
    renamed = await engine.create(length=5, metadata={})
    await write(engine, renamed.id, b"12345")
    engine = await restart(engine)
    # A crash between renaming a part and updating its row.
    store = local(engine)
    os.rename(store.part_path(renamed.id), store.file_path(renamed.id))

    await engine.resume_interrupted_work()
    assert (await engine.get(complete.id)).sha256 == sha256(data)
    assert (await engine.get(renamed.id)).sha256 == sha256(b"12345")
    assert (await engine.get(partial.id)).state is UploadState.RECEIVING
    engine = await restart(engine)
    assert (await engine.get(complete.id)).is_finished
    assert (await engine.get(renamed.id)).is_finished


async def test_resume_interrupted_work_assembles_ready_finals(
    engine: UploadEngine, restart: Restart
) -> None:
    datas = concat_parts_data()
    parts = [await upload(engine, data, concat_kind=ConcatKind.PARTIAL) for data in datas]
    engine = await restart(engine)
    # The server stopped after the parts finished but before it assembled the final.
    final = UploadSession(
        id=new_upload_id(),
        length=sum(map(len, datas)),
        metadata={},
        created=0.0,
        expires=None,
        state=UploadState.ASSEMBLING,
        concat_kind=ConcatKind.FINAL,
        concat_parts=tuple(p.id for p in parts),
    )
    await engine.store_new(final)
    await engine.resume_interrupted_work()
    assembled = await engine.get(final.id)
    assert assembled.sha256 == sha256(b"".join(datas))
    assert await stored_bytes(engine, final.id) == b"".join(datas)


@pytest.mark.local_blobs
async def test_out_of_order_chunks_are_hashed_from_disk_before_finish(
    engine: UploadEngine,
) -> None:
    chunk = 1024 * 1024
    data = os.urandom(4 * chunk)
    session = await engine.create(length=len(data), metadata={})
    for n in (2, 1, 3, 0):
        async with engine.writer(
            session.id, n * chunk, end=(n + 1) * chunk, sequential=False
        ) as writer:
            await writer.write(data[n * chunk : (n + 1) * chunk])
            await writer.commit()
    deadline = asyncio.get_running_loop().time() + 10
    while (await engine.get(session.id)).hashed_offset < len(data):
        assert asyncio.get_running_loop().time() < deadline, "the hash never caught up"
        await asyncio.sleep(0.01)
    finished = await engine.finish(session.id)
    assert finished.sha256 == hashlib.sha256(data).hexdigest()


async def test_buffer_pool_bounds_staging_memory(engine: UploadEngine) -> None:
    pool = engine.buffers
    pairs = [pool.acquire() for _ in range(12)]
    assert sum(len(a) + len(b) for a, b in pairs) <= 8 * 2 * MiB + 4 * 2 * 128 * 1024
    for pair in pairs:
        pool.release(pair)
    assert pool.idle_pairs == 8


async def test_a_writer_with_an_interrupt_takes_over_from_an_older_one(
    engine: UploadEngine,
) -> None:
    session = await engine.create(length=3 * MiB, metadata={})
    data = os.urandom(3 * MiB)
    interrupted = asyncio.Event()
    first_may_end = asyncio.Event()

    async def first() -> None:
        async with engine.writer(session.id, 0, interrupt=interrupted.set) as writer:
            await writer.write(data[:MiB])
            await writer.checkpoint()
            await first_may_end.wait()  # a request stuck on a dead connection

    stuck = asyncio.create_task(first())
    # The retrying client asks for the offset first: the first request's checkpoint is in.
    while (await engine.get(session.id)).offset < MiB:
        await asyncio.sleep(0.01)

    async def end_first_when_interrupted() -> None:
        await interrupted.wait()
        first_may_end.set()

    ender = asyncio.create_task(end_first_when_interrupted())
    async with engine.writer(session.id, MiB, interrupt=lambda: None) as writer:
        await writer.write(data[MiB:])
        await writer.commit()
    await stuck
    await ender
    assert interrupted.is_set()
    finished = await engine.finish(session.id)
    assert finished.sha256 == sha256(data)


async def test_a_writer_without_an_interrupt_is_never_taken_over(engine: UploadEngine) -> None:
    session = await engine.create(length=MiB, metadata={})
    async with engine.writer(session.id, 0) as writer:
        await writer.write(b"x" * 10)
        with pytest.raises(FreightError) as caught:
            async with engine.writer(session.id, 0, interrupt=lambda: None):
                pass
        assert caught.value.code == "ERR_UPLOAD_LOCKED"


async def test_without_a_running_hash_only_a_declared_digest_is_computed(
    open_engine: OpenEngine,
) -> None:
    engine = open_engine(hash_uploads=False)
    data = os.urandom(MiB + 17)
    first = await engine.create(length=len(data), metadata={})
    await write(engine, first.id, data)
    assert (await engine.finish(first.id)).sha256 is None
    second = await engine.create(length=len(data), metadata={})
    await write(engine, second.id, data)
    with pytest.raises(ChecksumMismatch):
        await engine.finish(second.id, expected_sha256="00" * 32)
    finished = await engine.finish(second.id, expected_sha256=sha256(data))
    assert finished.sha256 == sha256(data)
