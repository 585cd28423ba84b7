"""The BlobStore contract, run over every blob backend.

Writers and readers are synchronous and the engine calls them from worker threads, never on
the event loop (a store may serve them from the loop, as S3Blobs does): so do these tests,
through ``asyncio.to_thread``."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import threading
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from freight._types import Buffer
from freight.core.blobs import (
    BlobReader,
    BlobStore,
    PipeTarget,
    Presigner,
    ReadBack,
    SendfileSource,
    ServerConcat,
)
from freight.core.session import new_upload_id
from freight.errors import FreightError, UploadNotFound
from tests.contract.backends import STORE_ABILITIES, WRITER_ABILITIES, BlobBackend

MiB = 1024 * 1024
HOSTILE_IDS = ["../x", "a/b", "", "x" * 200, "..", ".", "/etc/passwd", "a\x00b", "abc\n", "~x"]


async def read_all(reader: BlobReader, size: int, offset: int = 0) -> bytes:
    buffer = bytearray(size)
    count = await asyncio.to_thread(reader.read_into, offset, memoryview(buffer))
    return bytes(buffer[:count])


async def write_blob(blobs: BlobStore, pieces: list[tuple[int, Buffer]]) -> str:
    upload_id = new_upload_id()
    await blobs.create(upload_id)
    writer = await blobs.open_writer(upload_id)
    try:
        for offset, data in pieces:
            await asyncio.to_thread(writer.write_at, offset, data)
        await asyncio.to_thread(writer.sync)
    finally:
        await asyncio.to_thread(writer.close)
    return upload_id


async def read_finished(blobs: BlobStore, upload_id: str, size: int) -> bytes:
    reader = await blobs.open_reader(upload_id)
    try:
        return await read_all(reader, size)
    finally:
        await asyncio.to_thread(reader.close)


async def test_writes_at_any_offset_read_back_exactly(blobs: BlobStore) -> None:
    data = random.Random(5).randbytes(300_001)
    cuts = sorted(random.Random(6).sample(range(1, len(data)), 40))
    pieces = [(s, data[s:e]) for s, e in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    random.Random(7).shuffle(pieces)
    upload_id = await write_blob(blobs, [(o, memoryview(bytearray(d))) for o, d in pieces])
    await blobs.finish(upload_id, len(data))

    reader = await blobs.open_reader(upload_id)
    try:
        assert await read_all(reader, len(data) + 100) == data
        assert await read_all(reader, 1000, offset=len(data) - 10) == data[-10:]
        assert await read_all(reader, 10, offset=len(data)) == b""
        assert await read_all(reader, 10, offset=len(data) + 5000) == b""
        assert await read_all(reader, 7, offset=123_456) == data[123_456:123_463]
    finally:
        await asyncio.to_thread(reader.close)


async def test_a_write_far_ahead_then_the_gap(blobs: BlobStore) -> None:
    # Only a complete blob is finished (the engine finishes one when every byte is
    # recorded), so the gap is filled, last; the tail lies past a 5 MiB part.
    middle = random.Random(8).randbytes(6 * MiB + 1)
    pieces: list[tuple[int, Buffer]] = [(6 * MiB + 5, b"tail"), (0, b"head")]
    upload_id = await write_blob(blobs, [*pieces, (4, middle)])
    await blobs.finish(upload_id, 6 * MiB + 9)
    content = await read_finished(blobs, upload_id, 7 * MiB)
    assert content == b"head" + middle + b"tail"


async def test_an_empty_blob(blobs: BlobStore) -> None:
    upload_id = await write_blob(blobs, [])
    await blobs.finish(upload_id, 0)
    assert await read_finished(blobs, upload_id, 10) == b""


async def test_finish_is_idempotent(blobs: BlobStore) -> None:
    upload_id = await write_blob(blobs, [(0, b"0123456789")])
    await blobs.finish(upload_id, 10)
    await blobs.finish(upload_id, 10)
    assert await read_finished(blobs, upload_id, 20) == b"0123456789"


async def test_only_finished_blobs_open_for_reading(blobs: BlobStore) -> None:
    upload_id = await write_blob(blobs, [(0, b"abc")])
    with pytest.raises(UploadNotFound):
        await blobs.open_reader(upload_id)


async def test_a_writer_opens_after_finishing(blobs: BlobStore) -> None:
    # A crash between the store finishing a blob and the record saying so: the engine
    # opens a writer again and finishes once more.
    upload_id = await write_blob(blobs, [(0, b"abcdef")])
    await blobs.finish(upload_id, 6)
    writer = await blobs.open_writer(upload_id)
    await asyncio.to_thread(writer.close)
    await blobs.finish(upload_id, 6)
    assert await read_finished(blobs, upload_id, 10) == b"abcdef"


async def test_delete_frees_the_blob(blobs: BlobStore) -> None:
    unfinished = await write_blob(blobs, [(0, b"x" * 1000)])
    finished = await write_blob(blobs, [(0, b"y" * 1000)])
    await blobs.finish(finished, 1000)
    for upload_id in (unfinished, finished):
        await blobs.delete(upload_id)
        await blobs.delete(upload_id)  # twice is not an error
        with pytest.raises(UploadNotFound):
            await blobs.open_writer(upload_id)
        with pytest.raises(UploadNotFound):
            await blobs.open_reader(upload_id)
        with pytest.raises(UploadNotFound):
            await blobs.finish(upload_id, 1000)
        await blobs.create(upload_id)  # the id is free again, and empty
        await blobs.finish(upload_id, 0)
        assert await read_finished(blobs, upload_id, 10) == b""
    await blobs.delete(new_upload_id())  # unknown: not an error


async def test_unknown_ids_are_not_found(blobs: BlobStore) -> None:
    unknown = new_upload_id()
    with pytest.raises(UploadNotFound):
        await blobs.open_writer(unknown)
    with pytest.raises(UploadNotFound):
        await blobs.open_reader(unknown)
    with pytest.raises(UploadNotFound):
        await blobs.finish(unknown, 0)


async def test_creating_an_id_twice_is_refused(blobs: BlobStore) -> None:
    upload_id = await write_blob(blobs, [(0, b"kept")])
    with pytest.raises(FreightError):
        await blobs.create(upload_id)
    await blobs.finish(upload_id, 4)
    assert await read_finished(blobs, upload_id, 10) == b"kept"


async def test_free_bytes(blobs: BlobStore) -> None:
    free = await blobs.free_bytes()
    assert free is None or free >= 0


def _piece(index: int, buffer: bytearray) -> bytearray:
    buffer[:8] = index.to_bytes(8, "big")
    buffer[-8:] = (index * 7919).to_bytes(8, "big")
    return buffer


async def test_a_big_blob_in_shuffled_pieces(blobs: BlobStore, blob_backend: BlobBackend) -> None:
    count = 64
    order = list(range(count))
    random.Random(11).shuffle(order)
    upload_id = new_upload_id()
    await blobs.create(upload_id)
    buffer = bytearray(os.urandom(MiB))
    expected = hashlib.sha256()
    for index in range(count):
        expected.update(bytes(_piece(index, buffer)))

    tracemalloc.start()
    try:
        writer = await blobs.open_writer(upload_id)
        for index in order:
            await asyncio.to_thread(writer.write_at, index * MiB, _piece(index, buffer))
        await asyncio.to_thread(writer.sync)
        await asyncio.to_thread(writer.close)
        await blobs.finish(upload_id, count * MiB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Bytes that leave the process cost no memory; bytes kept in memory cost themselves,
    # once (pages, not a buffer grown and copied as the blob grows).
    bound = 4 * MiB if blob_backend.bytes_leave_memory else count * MiB + 4 * MiB
    assert peak < bound, f"writing 64 MiB peaked at {peak / MiB:.1f} MiB"

    actual = hashlib.sha256()
    reader = await blobs.open_reader(upload_id)
    try:
        view = memoryview(buffer)
        offset = 0
        while count := await asyncio.to_thread(reader.read_into, offset, view):
            actual.update(view[:count])
            offset += count
    finally:
        await asyncio.to_thread(reader.close)
    assert offset == 64 * MiB
    assert actual.hexdigest() == expected.hexdigest()


async def test_abilities(blobs: BlobStore, blob_backend: BlobBackend) -> None:
    upload_id = await write_blob(blobs, [])
    writer = await blobs.open_writer(upload_id)
    try:
        has = {name for name, kind in STORE_ABILITIES.items() if isinstance(blobs, kind)}
        has |= {name for name, kind in WRITER_ABILITIES.items() if isinstance(writer, kind)}
    finally:
        await asyncio.to_thread(writer.close)
    assert has == blob_backend.abilities


@pytest.mark.ability("ReadBack")
async def test_read_back_reads_unfinished_bytes(blobs: BlobStore) -> None:
    assert isinstance(blobs, ReadBack)
    upload_id = await write_blob(blobs, [(5, b"world"), (0, b"hello")])
    reader = await asyncio.to_thread(blobs.open_part_reader, upload_id)
    try:
        assert await read_all(reader, 20) == b"helloworld"
    finally:
        await asyncio.to_thread(reader.close)
    await blobs.finish(upload_id, 10)
    # Finished but not yet recorded as such (a crash in between): still readable.
    reader = await asyncio.to_thread(blobs.open_part_reader, upload_id)
    try:
        assert await read_all(reader, 20) == b"helloworld"
    finally:
        await asyncio.to_thread(reader.close)


@pytest.mark.ability("SendfileSource")
async def test_sendfile_source_is_the_finished_bytes(blobs: BlobStore) -> None:
    assert isinstance(blobs, SendfileSource)
    upload_id = await write_blob(blobs, [(0, b"abc")])
    await blobs.finish(upload_id, 3)
    assert blobs.file_path(upload_id).read_bytes() == b"abc"


@pytest.mark.ability("PipeTarget")
async def test_pipe_targets_take_bytes_from_a_pipe(blobs: BlobStore) -> None:
    upload_id = await write_blob(blobs, [])
    writer = await blobs.open_writer(upload_id)
    assert isinstance(writer, PipeTarget)
    data = os.urandom(200_000)
    read_end, write_end = os.pipe()
    try:
        feeder = threading.Thread(target=os.write, args=(write_end, data))
        feeder.start()  # the pipe holds 64 KiB: it fills while the writer drains it
        await asyncio.to_thread(writer.write_from_pipe, read_end, 100_000, len(data))
        feeder.join()
        await asyncio.to_thread(writer.sync)
    finally:
        await asyncio.to_thread(writer.close)
        os.close(read_end)
        os.close(write_end)
    await blobs.finish(upload_id, 300_000)
    assert await read_finished(blobs, upload_id, 400_000) == bytes(100_000) + data


@pytest.mark.ability("ServerConcat")
async def test_server_concat_joins_finished_blobs(blobs: BlobStore) -> None:
    assert isinstance(blobs, ServerConcat)
    # Sizes that make a target part span sources (S3 parts are at least 5 MiB).
    sources = [os.urandom(3 * MiB), b"", b"xyz", os.urandom(4 * MiB + 1)]
    part_ids = []
    for data in sources:
        part_ids.append(await write_blob(blobs, [(0, data)] if data else []))
        await blobs.finish(part_ids[-1], len(data))
    total = sum(map(len, sources))
    final = new_upload_id()
    await blobs.create(final)
    await blobs.concatenate(final, part_ids)
    await blobs.finish(final, total)
    assert await read_finished(blobs, final, total + 10) == b"".join(sources)
    with pytest.raises(UploadNotFound):
        await blobs.concatenate(new_upload_id(), part_ids[:1])


@pytest.mark.ability("Presigner")
async def test_a_presigned_url_reads_the_finished_blob(blobs: BlobStore) -> None:
    assert isinstance(blobs, Presigner)
    data = os.urandom(100_000)
    upload_id = await write_blob(blobs, [(0, data)])
    await blobs.finish(upload_id, len(data))
    url = await blobs.presign_download(upload_id, expires_in=60, filename="résumé 1.bin")
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        assert response.status == 200
        assert await response.read() == data
        disposition = response.headers["Content-Disposition"]
        assert "filename*=UTF-8''r%C3%A9sum%C3%A9%201.bin" in disposition


def _tree(root: Path) -> set[Path]:
    return set(root.rglob("*"))


@pytest.mark.parametrize("bad", HOSTILE_IDS)
async def test_hostile_ids_are_refused(blobs: BlobStore, tmp_path: Path, bad: str) -> None:
    before = _tree(tmp_path)
    refusals: list[Callable[[], Any]] = [
        lambda: blobs.create(bad),
        lambda: blobs.open_writer(bad),
        lambda: blobs.open_reader(bad),
        lambda: blobs.finish(bad, 0),
        lambda: blobs.delete(bad),
    ]
    for refuse in refusals:
        with pytest.raises(UploadNotFound):
            await refuse()
    if isinstance(blobs, SendfileSource):
        with pytest.raises(UploadNotFound):
            blobs.file_path(bad)
    if isinstance(blobs, ReadBack):
        with pytest.raises(UploadNotFound):
            await asyncio.to_thread(blobs.open_part_reader, bad)
    if isinstance(blobs, ServerConcat):
        with pytest.raises(UploadNotFound):
            await blobs.concatenate(bad, [])
        target = new_upload_id()
        await blobs.create(target)
        with pytest.raises(UploadNotFound):
            await blobs.concatenate(target, [bad])
        await blobs.delete(target)
    if isinstance(blobs, Presigner):
        with pytest.raises(UploadNotFound):
            await blobs.presign_download(bad, expires_in=60, filename=None)
    assert _tree(tmp_path) == before


async def test_a_healthy_store_passes_its_probe_and_keeps_nothing(
    blobs: BlobStore, tmp_path: Path
) -> None:
    upload_id = await write_blob(blobs, [(0, b"kept")])
    before = _tree(tmp_path)
    for _ in range(3):
        await blobs.probe()
    assert _tree(tmp_path) == before
    await blobs.finish(upload_id, 4)
    assert await read_finished(blobs, upload_id, 10) == b"kept"
