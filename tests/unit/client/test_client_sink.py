"""Received bytes into a file: batches written and hashed in worker threads, overlapped.

:class:`PartWriter` (HTTP downloads) and :class:`PartSink` (under the TCP download) must
write every byte at its place, hash it only once it is on disk and in order, report each
write as soon as it is done, and never leave a thread running with a buffer or a descriptor
after ``close``, whatever fails or is cancelled.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from freight.client.hashing import SplitHasher
from freight.client.writer import PartSink, PartWriter


@pytest.fixture
def part(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    path = tmp_path / "out.part"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    yield path, fd
    os.close(fd)


@pytest.mark.parametrize("seed", range(5))
async def test_writer_puts_every_byte_in_place_and_hashes_it_once(
    part: tuple[Path, int], seed: int
) -> None:
    path, fd = part
    rng = random.Random(seed)
    start = rng.choice([0, 0, 1000])
    prefix = rng.randbytes(start)
    os.pwrite(fd, prefix, 0)
    hasher = SplitHasher(path, start, chunk_size=997)
    hasher.start()
    writer = PartWriter(fd, start, hasher=hasher, batch_size=rng.choice([1, 5000, 1 << 20]))
    positions: list[int] = []
    writer.on_written = positions.append
    data = bytearray()
    for _ in range(rng.randrange(1, 200)):
        chunk = rng.randbytes(rng.choice([1, 17, 4096, rng.randrange(70_000)]))
        data += chunk
        if writer.append(chunk) or rng.random() < 0.1:
            await writer.submit()
    assert await writer.flush() == start + len(data)
    assert positions == sorted(positions) and positions[-1] == start + len(data)
    assert path.read_bytes() == prefix + data
    expected = hashlib.sha256(prefix + data).digest()
    assert await hasher.finish(start + len(data)) == expected
    await hasher.close()


class _Recorder(PartSink[tuple[int, bytes]]):
    """Writes ``(offset, bytes)`` batches; records what was hashed, in order."""

    def __init__(self, fd: int, *, slow_write: float = 0.0, fail_at: int | None = None) -> None:
        self.written: list[int] = []
        super().__init__(self.written.append)
        self.fd = fd
        self.slow_write = slow_write
        self.fail_at = fail_at
        self.hashed: list[int] = []
        self.writes_running = 0
        self.lock = threading.Lock()

    def write(self, batch: tuple[int, bytes]) -> int:
        offset, data = batch
        with self.lock:
            self.writes_running += 1
        try:
            time.sleep(self.slow_write)
            if offset == self.fail_at:
                raise OSError(28, "No space left on device")
            os.pwrite(self.fd, data, offset)
            return offset + len(data)
        finally:
            with self.lock:
                self.writes_running -= 1

    def hash(self, batch: tuple[int, bytes]) -> None:
        self.hashed.append(batch[0])


async def test_a_failed_write_is_raised_once_and_never_hashed(part: tuple[Path, int]) -> None:
    _, fd = part
    sink = _Recorder(fd, fail_at=200)
    await sink.add((0, b"a" * 100))
    await sink.add((100, b"b" * 100))
    await sink.add((200, b"c" * 100))  # the write that fails
    with pytest.raises(OSError, match="No space"):
        await sink.add((300, b"d" * 100))  # not written: no hole past the failure
    await sink.close()  # the failure is not raised twice
    assert sink.hashed == [0, 100]
    assert sink.written == [100, 200]
    assert os.fstat(fd).st_size == 200


async def test_close_after_cancellation_waits_for_the_running_write(
    part: tuple[Path, int],
) -> None:
    _, fd = part
    sink = _Recorder(fd, slow_write=0.3)
    await sink.add((0, b"a" * 10))
    adding = asyncio.ensure_future(sink.add((10, b"b" * 10)))  # waits for the first write
    await asyncio.sleep(0.05)
    adding.cancel()
    with pytest.raises(asyncio.CancelledError):
        await adding
    assert sink.writes_running == 1
    await sink.close()
    assert sink.writes_running == 0
    assert sink.hashed == [0] and sink.written == [10]


async def test_each_write_is_reported_when_done_not_at_the_next_add(
    part: tuple[Path, int],
) -> None:
    _, fd = part
    sink = _Recorder(fd)
    await sink.add((0, b"a" * 10))
    deadline = time.monotonic() + 5
    while not sink.written:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    assert sink.written == [10]
    await sink.close()


async def test_the_disk_reader_catches_up_after_a_feed_past_a_gap(tmp_path: Path) -> None:
    # An upload feeds what it reads; a feed past bytes nobody fed (chunks the server already
    # had) is skipped and start() has the disk reader hash the gap and the skipped bytes.
    data = os.urandom(3 * 1024 * 1024)
    path = tmp_path / "f"
    path.write_bytes(data)
    hasher = SplitHasher(path, 0, chunk_size=64 * 1024)
    hasher.start()  # nothing to read yet
    hasher.feed(0, data[:1000])
    hasher.feed(2_000_000, data[2_000_000:2_500_000])  # past a gap: skipped
    assert hasher.hashed == 1000
    hasher.start()
    deadline = time.monotonic() + 10
    while hasher.hashed < 2_500_000:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    hasher.feed(2_500_000, data[2_500_000:])  # caught up: fed bytes are hashed again
    assert hasher.hashed == len(data)
    assert await hasher.finish(len(data)) == hashlib.sha256(data).digest()
    await hasher.close()
