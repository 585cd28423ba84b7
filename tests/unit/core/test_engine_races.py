"""Concurrency in the engine: writers sharing a part file, take-over, closing under writers."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from freight.core.engine import UploadEngine
from freight.core.session import UploadSession
from freight.errors import ClientDisconnected, OffsetMismatch
from tests.unit.core.stored import local, stored_bytes

MiB = 1024 * 1024
OpenEngine = Callable[..., UploadEngine]


def open_descriptors_of(path: Path) -> int:
    """How many of this process's descriptors point at ``path`` (deleted or not)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.removesuffix(" (deleted)") == str(path):
            count += 1
    return count


@pytest.mark.local_blobs
async def test_parallel_writers_open_one_part_file_and_close_it(engine: UploadEngine) -> None:
    chunk = MiB
    session = await engine.create(length=8 * chunk, metadata={})
    part_path = local(engine).part_path(session.id)

    async def put(n: int) -> None:
        start = n * chunk
        async with engine.writer(
            session.id, start, end=start + chunk, sequential=False, all_or_nothing=True
        ) as writer:
            await writer.write(bytes([n]) * chunk)
            await writer.commit(expected_end=start + chunk)

    for batch in ((0, 1, 2, 3), (4, 5, 6, 7)):  # a client sending four chunks at once
        await asyncio.gather(*(put(n) for n in batch))
        await engine.hashed(session.id)  # hashing behind the writers opens the file too
        assert open_descriptors_of(part_path) == 0
    await engine.finish(session.id)
    await engine.delete(session.id)
    assert open_descriptors_of(part_path) == 0


class Request:
    """A client request writing through the engine, ended by a take-over like a real one."""

    def __init__(self, engine: UploadEngine, upload_id: str, offset: int) -> None:
        self.engine = engine
        self.upload_id = upload_id
        self.offset = offset
        self.interrupted = asyncio.Event()
        self.wrote = asyncio.Event()

    def interrupt(self) -> None:
        self.interrupted.set()

    async def stalls_after(self, data: bytes) -> UploadSession:
        """Write ``data``, then wait for more bytes that never come (a dead link)."""
        async with self.engine.writer(
            self.upload_id, self.offset, interrupt=self.interrupt
        ) as writer:
            await writer.write(data)
            await writer.settle()
            self.wrote.set()
            await self.interrupted.wait()
            raise ClientDisconnected("the connection was closed")

    async def sends(self, data: bytes) -> UploadSession:
        async with self.engine.writer(
            self.upload_id, self.offset, interrupt=self.interrupt
        ) as writer:
            await writer.write(data)
            return await writer.commit()


async def test_a_take_over_is_served_from_the_offset_its_client_was_given(
    open_engine: OpenEngine,
) -> None:
    engine = open_engine(sync_every=64 * MiB)  # nothing is recorded before the stall
    data = os.urandom(6 * MiB)
    session = await engine.create(length=len(data), metadata={})
    stalled = Request(engine, session.id, 0)
    first = asyncio.ensure_future(stalled.stalls_after(data[: 3 * MiB]))
    await stalled.wrote.wait()
    told = (await engine.get(session.id)).offset  # what the client's HEAD hears
    assert told == 0

    retry = Request(engine, session.id, told)
    done = await retry.sends(data[told:])
    with pytest.raises(ClientDisconnected):
        await first
    assert done.offset == len(data)
    finished = await engine.finish(session.id)
    assert await stored_bytes(engine, finished.id) == data


async def test_a_stale_request_takes_nothing_over(open_engine: OpenEngine) -> None:
    engine = open_engine(sync_every=MiB)
    session = await engine.create(length=4 * MiB, metadata={})
    running = Request(engine, session.id, 0)
    first = asyncio.ensure_future(running.stalls_after(os.urandom(2 * MiB)))
    await running.wrote.wait()
    await asyncio.sleep(0.05)
    recorded = (await engine.get(session.id)).offset
    assert recorded > 0
    with pytest.raises(OffsetMismatch):
        await Request(engine, session.id, recorded + 1).sends(b"x")
    assert not running.interrupted.is_set()  # the healthy request goes on
    running.interrupt()
    with pytest.raises(ClientDisconnected):
        await first


async def test_closing_the_engine_keeps_what_a_running_writer_wrote(
    open_engine: OpenEngine,
) -> None:
    engine = open_engine(sync_every=64 * MiB)
    session = await engine.create(length=16 * MiB, metadata={})
    slow = Request(engine, session.id, 0)
    request = asyncio.ensure_future(slow.stalls_after(os.urandom(5 * MiB)))
    await slow.wrote.wait()

    closing = asyncio.ensure_future(engine.close())
    await asyncio.wait([closing], timeout=10)
    if not request.done():
        request.cancel()  # what aiohttp does to a request still running after shutdown
    [ended] = await asyncio.gather(request, return_exceptions=True)
    await closing
    # The request ended as a dropped connection does: no error from a closed file.
    assert isinstance(ended, ClientDisconnected | asyncio.CancelledError), repr(ended)
    reopened = open_engine()
    assert (await reopened.get(session.id)).offset == 5 * MiB
