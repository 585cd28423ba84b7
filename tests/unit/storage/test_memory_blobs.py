"""MemoryBlobs beyond the contract: pages, capacity and threads."""

from __future__ import annotations

import asyncio
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from freight.core.session import new_upload_id
from freight.errors import InsufficientStorage, UploadNotFound
from freight.storage import MemoryBlobs


async def _finished_bytes(blobs: MemoryBlobs, upload_id: str, length: int) -> bytes:
    await blobs.finish(upload_id, length)
    reader = await blobs.open_reader(upload_id)
    buffer = bytearray(length + 10)
    count = reader.read_into(0, memoryview(buffer))
    return bytes(buffer[:count])


@settings(max_examples=60, deadline=None)
@given(
    writes=st.lists(
        st.tuples(st.integers(0, 200), st.binary(min_size=0, max_size=70)), max_size=12
    ),
    cut=st.integers(0, 300),
)
def test_pages_behave_like_one_byte_array(writes: list[tuple[int, bytes]], cut: int) -> None:
    async def check() -> None:
        blobs = MemoryBlobs(page_size=16)
        upload_id = new_upload_id()
        await blobs.create(upload_id)
        writer = await blobs.open_writer(upload_id)
        model = bytearray()
        for offset, data in writes:
            writer.write_at(offset, data)
            if data:
                model.extend(bytes(max(offset + len(data) - len(model), 0)))
                model[offset : offset + len(data)] = data
        model = (model + bytes(cut))[:cut]
        assert await _finished_bytes(blobs, upload_id, cut) == bytes(model)
        # Pages wholly past the length are gone.
        assert blobs.bytes_used <= -(-cut // 16) * 16

    asyncio.run(check())


async def test_capacity_is_counted_in_pages() -> None:
    blobs = MemoryBlobs(capacity=4 * 1024, page_size=1024)
    assert await blobs.free_bytes() == 4096
    first, second = new_upload_id(), new_upload_id()
    await blobs.create(first)
    await blobs.create(second)
    writer = await blobs.open_writer(first)
    writer.write_at(1000, bytes(100))  # straddles pages 0 and 1
    assert await blobs.free_bytes() == 2048
    writer.write_at(0, bytes(2048))  # pages already held cost nothing more
    assert await blobs.free_bytes() == 2048
    other = await blobs.open_writer(second)
    with pytest.raises(InsufficientStorage):
        other.write_at(0, bytes(3000))
    assert await blobs.free_bytes() == 2048  # a refused write takes nothing
    other.write_at(0, bytes(2048))
    assert await blobs.free_bytes() == 0
    await blobs.delete(first)
    assert await blobs.free_bytes() == 2048
    with pytest.raises(UploadNotFound):
        writer.write_at(0, b"x")  # its blob is gone


async def test_writers_in_many_threads() -> None:
    blobs = MemoryBlobs(page_size=4096)
    upload_id = new_upload_id()
    await blobs.create(upload_id)
    writer = await blobs.open_writer(upload_id)
    piece = 1000  # not a page multiple: neighbours share pages

    def fill(first: int) -> None:
        for index in range(first, 400, 8):
            writer.write_at(index * piece, bytes([index % 251]) * piece)

    threads = [threading.Thread(target=fill, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    content = await _finished_bytes(blobs, upload_id, 400 * piece)
    assert content == b"".join(bytes([i % 251]) * piece for i in range(400))
