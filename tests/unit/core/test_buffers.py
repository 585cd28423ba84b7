"""Buffers whose number, not the number of uploads, bounds the memory the engine holds."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import AsyncIterator

import pytest

from freight.core.buffers import BufferPool, ReadBuffers
from freight.core.engine import UploadEngine


def test_pool_makes_a_fixed_number_of_large_pairs_then_small_ones() -> None:
    pool = BufferPool(pairs=2, size=1024, small_size=64)
    pairs = [pool.acquire() for _ in range(5)]
    assert [len(a) for a, _ in pairs] == [1024, 1024, 64, 64, 64]
    assert all(len(a) == len(b) for a, b in pairs)
    for pair in pairs:
        pool.release(pair)
    assert pool.idle_pairs == 2  # small pairs are dropped, large ones kept
    again = [pool.acquire() for _ in range(3)]
    assert {id(a) for a, _ in again[:2]} == {id(a) for a, _ in pairs[:2]}
    assert len(again[2][0]) == 64


def test_a_discarded_large_pair_frees_its_place() -> None:
    pool = BufferPool(pairs=1, size=1024, small_size=64)
    pool.discard(pool.acquire())  # a worker thread may still hold it: never reused
    fresh = pool.acquire()
    assert len(fresh[0]) == 1024
    assert pool.idle_pairs == 0


async def test_read_buffers_lend_at_most_count_and_reuse_them() -> None:
    buffers = ReadBuffers(count=2, size=4096)
    lent: list[bytearray] = []
    release = asyncio.Event()
    third_got_one = asyncio.Event()

    async def borrower(then: asyncio.Event | None = None) -> None:
        async with buffers.borrow() as buffer:
            assert len(buffer) == 4096
            lent.append(buffer)
            if then is not None:
                then.set()
            await release.wait()

    first = [asyncio.ensure_future(borrower()) for _ in range(2)]
    third = asyncio.ensure_future(borrower(third_got_one))
    await asyncio.sleep(0.01)
    assert len(lent) == 2 and not third_got_one.is_set()  # the third one waits its turn
    release.set()
    await asyncio.gather(*first, third)
    assert len(lent) == 3
    assert lent[2] is lent[0] or lent[2] is lent[1]  # reused, not made anew
    assert buffers.idle == 2


async def test_a_read_buffer_is_dropped_after_a_failure() -> None:
    buffers = ReadBuffers(count=1, size=16)
    with pytest.raises(OSError):
        async with buffers.borrow() as failed:
            raise OSError("a read failed; a worker thread may still be using the buffer")
    assert buffers.idle == 0
    async with buffers.borrow() as buffer:  # the slot was freed all the same
        assert buffer is not failed


def test_read_buffers_need_at_least_one() -> None:
    with pytest.raises(ValueError):
        ReadBuffers(count=0)


class CountingReadBuffers(ReadBuffers):
    def __init__(self, count: int, size: int) -> None:
        super().__init__(count=count, size=size)
        self.lent = 0
        self.most = 0

    @contextlib.asynccontextmanager
    async def borrow(self) -> AsyncIterator[bytearray]:
        async with super().borrow() as buffer:
            self.lent += 1
            self.most = max(self.most, self.lent)
            try:
                yield buffer
            finally:
                self.lent -= 1


async def test_uploads_catching_up_at_once_share_the_engines_read_buffers(
    engine: UploadEngine,
) -> None:
    counting = engine.read_buffers = CountingReadBuffers(count=2, size=4096)
    chunk = 64 * 1024
    datas = [os.urandom(4 * chunk) for _ in range(6)]
    sessions = [await engine.create(length=len(data), metadata={}) for data in datas]

    async def upload(session_id: str, data: bytes) -> None:
        # Chunk 0 last: its writer carries the hash, and the rest is caught up from disk.
        for n in (1, 2, 3, 0):
            async with engine.writer(
                session_id, n * chunk, end=(n + 1) * chunk, sequential=False
            ) as writer:
                await writer.write(data[n * chunk : (n + 1) * chunk])
                await writer.commit()

    await asyncio.gather(*(upload(s.id, d) for s, d in zip(sessions, datas, strict=True)))
    finished = await asyncio.gather(*(engine.finish(s.id) for s in sessions))
    for session, data in zip(finished, datas, strict=True):
        assert session.sha256 == hashlib.sha256(data).hexdigest()
    assert 1 <= counting.most <= 2
    assert counting.lent == 0
