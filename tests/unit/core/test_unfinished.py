"""Unfinished uploads: never-written ones cost no memory, what they still need is accounted,
and complete uploads nobody finished are finished by the sweeper."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest

from freight.core.engine import UploadEngine
from freight.core.sweeper import FINISH_GRACE
from freight.errors import InsufficientStorage, TooManyUploads, UploadCapacityReached


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_never_written_uploads_stay_out_of_memory(engine: UploadEngine) -> None:
    ids = [(await engine.create(length=10, metadata={}, client="a")).id for _ in range(300)]
    assert len(engine.uploads.by_id) == 0
    assert engine.active_transfers(50) == []
    async with engine.writer(ids[0], 0) as writer:
        await writer.write(b"x")
        await writer.commit()
    assert [s.id for s in engine.active_transfers(50)] == [ids[0]]
    assert await engine.unfinished_count() == 300


async def test_caps_count_unfinished_uploads_per_client_and_in_all(
    open_engine: Callable[..., UploadEngine],
) -> None:
    engine = open_engine(max_unfinished=3, max_unfinished_per_client=2)
    await engine.create(length=1, metadata={}, client="a")
    done = await engine.create(length=0, metadata={}, client="a")
    await engine.finish(done.id)  # finished: no longer counts
    await engine.create(length=1, metadata={}, client="a")
    with pytest.raises(TooManyUploads) as caught:
        await engine.create(length=1, metadata={}, client="a")
    assert caught.value.status == 429
    await engine.create(length=1, metadata={}, client="b")
    with pytest.raises(UploadCapacityReached) as full:
        await engine.create(length=1, metadata={}, client="c")
    assert full.value.status == 503


async def test_what_unfinished_uploads_still_need_counts_as_taken(
    open_engine: Callable[..., UploadEngine],
) -> None:
    engine = open_engine()
    usable = await engine.blobs.free_bytes()
    assert usable is not None
    first = await engine.create(length=usable // 2, metadata={})
    with pytest.raises(InsufficientStorage):
        await engine.create(length=usable // 2 + usable // 10, metadata={})
    await engine.delete(first.id)
    await engine.create(length=usable // 2 + usable // 10, metadata={})


async def test_the_sweeper_finishes_a_complete_upload_nobody_finished(
    open_engine: Callable[..., UploadEngine],
) -> None:
    clock = FakeClock()
    engine = open_engine(clock=clock)
    session = await engine.create(length=5, metadata={})
    async with engine.writer(session.id, 0) as writer:
        await writer.write(b"12345")
        await writer.commit()  # every byte recorded, but the client never finishes it
    assert await engine.finish_pending_work() == 0  # its client may still be finishing it
    clock.now += FINISH_GRACE + 1
    assert await engine.finish_pending_work() == 1
    finished = await engine.get(session.id)
    assert finished.is_finished and finished.sha256 == hashlib.sha256(b"12345").hexdigest()
