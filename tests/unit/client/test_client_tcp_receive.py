"""The raw TCP download client against a scripted server that cuts its stream anywhere.

DATA payloads go from the socket straight into the client's receive buffers, with the
frame headers read apart; these tests make the server write its frames in pieces of every
size (a header split anywhere, a payload crossing buffers), send an ERROR or a misplaced
DATA mid-stream, or go quiet, and check the ``.part`` and the digest each time.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from freight.client.errors import ConnectionFailed, ProtocolViolation
from freight.client.http import RetryPolicy
from freight.client.options import TransferOptions
from freight.client.partfile import part_path
from freight.client.resume_store import ResumeStore
from freight.client.tcp import TcpServerError, download_tcp
from freight.protocol.frames import (
    CLIENT_FRAMES,
    ErrorFrame,
    FileInfo,
    FrameDecoder,
    Get,
    Welcome,
    encode_data_header,
)

MiB = 1024 * 1024
NO_RETRIES = RetryPolicy(attempts=0)
FILE_ID = "abc123"

Script = Callable[[asyncio.StreamWriter, Get, bytes], Awaitable[None]]


@dataclass
class FakeServer:
    """Answers HELLO and GET like freight; ``script`` sends what a non-empty GET gets."""

    data: bytes
    script: Script
    port: int = 0
    gets: list[Get] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoder = FrameDecoder(CLIENT_FRAMES)
        try:
            while chunk := await reader.read(65536):
                for frame in decoder.feed(chunk):
                    if isinstance(frame, Get):
                        self.gets.append(frame)
                        await self._answer(writer, frame)
                    else:  # HELLO
                        writer.write(Welcome(16 * MiB, 16 * MiB).encode())
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _answer(self, writer: asyncio.StreamWriter, get: Get) -> None:
        size = len(self.data)
        length = size - get.offset if get.length is None else min(get.length, size - get.offset)
        digest = hashlib.sha256(self.data).digest()
        writer.write(FileInfo(size, get.offset, length, digest, "f.bin").encode())
        if length:
            await self.script(writer, get, self.data[get.offset : get.offset + length])
        await writer.drain()


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[bytes, Script], Awaitable[FakeServer]]]:
    servers: list[asyncio.Server] = []

    async def start(data: bytes, script: Script) -> FakeServer:
        fake = FakeServer(data, script)
        server = await asyncio.start_server(fake.handle, "127.0.0.1", 0)
        fake.port = server.sockets[0].getsockname()[1]
        servers.append(server)
        return fake

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


def frames(offset: int, payload: bytes, rng: random.Random) -> bytes:
    """DATA frames of random sizes covering ``payload``."""
    out = bytearray()
    position = 0
    while position < len(payload):
        count = min(rng.choice([1, 7, 4096, 65536, MiB, 5 * MiB]), len(payload) - position)
        out += encode_data_header(offset + position, count)
        out += payload[position : position + count]
        position += count
    return bytes(out)


async def dribble(writer: asyncio.StreamWriter, stream: bytes, rng: random.Random) -> None:
    """Write ``stream`` in pieces of every size, letting each one go out on its own."""
    position = 0
    while position < len(stream):
        count = rng.choice([1, 3, 15, 16, 17, 1000, 70_000, 3 * MiB])
        writer.write(stream[position : position + count])
        position += count
        await writer.drain()
        if rng.random() < 0.3:
            await asyncio.sleep(0.001)


def url(fake: FakeServer) -> str:
    return f"tcp://127.0.0.1:{fake.port}/{FILE_ID}"


@pytest.mark.parametrize("seed", range(4))
async def test_a_stream_cut_anywhere_arrives_whole(
    serve: Callable[[bytes, Script], Awaitable[FakeServer]], tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    data = rng.randbytes(rng.choice([1, 100, 9 * MiB + 13]))

    async def script(writer: asyncio.StreamWriter, get: Get, payload: bytes) -> None:
        await dribble(writer, frames(get.offset, payload, rng), rng)

    fake = await serve(data, script)
    target = tmp_path / "out.bin"
    fetched = await download_tcp(url(fake), target, TransferOptions(retry=NO_RETRIES))
    assert target.read_bytes() == data
    assert fetched.sha256 == hashlib.sha256(data).hexdigest() and fetched.verified


async def test_a_resume_continues_the_part(
    serve: Callable[[bytes, Script], Awaitable[FakeServer]], tmp_path: Path
) -> None:
    rng = random.Random(7)
    data = rng.randbytes(6 * MiB + 5)
    sent = 0

    async def script(writer: asyncio.StreamWriter, get: Get, payload: bytes) -> None:
        nonlocal sent
        stream = frames(get.offset, payload, rng)
        if not sent:  # the first attempt: about half, then the line drops
            stream = stream[: len(stream) // 2]
        sent += 1
        await dribble(writer, stream, rng)
        if sent == 1:
            writer.transport.abort()

    fake = await serve(data, script)
    target = tmp_path / "out.bin"
    store = ResumeStore(tmp_path / "state")
    with pytest.raises(ConnectionFailed):
        await download_tcp(url(fake), target, TransferOptions(resume_store=store, retry=NO_RETRIES))
    kept = part_path(target).stat().st_size
    assert 0 < kept < len(data)
    assert part_path(target).read_bytes() == data[:kept]
    fetched = await download_tcp(
        url(fake), target, TransferOptions(resume_store=store, retry=NO_RETRIES)
    )
    assert fetched.resumed_from == kept and target.read_bytes() == data
    assert fake.gets[-1].offset == kept


async def test_an_error_mid_stream_keeps_what_came_before(
    serve: Callable[[bytes, Script], Awaitable[FakeServer]], tmp_path: Path
) -> None:
    rng = random.Random(3)
    data = rng.randbytes(5 * MiB)
    cut = 3 * MiB + 12_345

    async def script(writer: asyncio.StreamWriter, get: Get, payload: bytes) -> None:
        stream = (
            frames(get.offset, payload[:cut], rng) + ErrorFrame("ERR_INTERNAL", "oops").encode()
        )
        await dribble(writer, stream, rng)

    fake = await serve(data, script)
    target = tmp_path / "out.bin"
    with pytest.raises(TcpServerError) as raised:
        await download_tcp(url(fake), target, TransferOptions(retry=NO_RETRIES))
    assert raised.value.server_code == "ERR_INTERNAL"
    assert part_path(target).read_bytes() == data[:cut]


async def test_data_out_of_place_is_a_protocol_violation(
    serve: Callable[[bytes, Script], Awaitable[FakeServer]], tmp_path: Path
) -> None:
    data = os.urandom(2 * MiB)

    async def script(writer: asyncio.StreamWriter, get: Get, payload: bytes) -> None:
        half = len(payload) // 2
        stream = encode_data_header(get.offset, half) + payload[:half]
        stream += encode_data_header(get.offset + half + 1, 10) + payload[half : half + 10]
        writer.write(stream)

    fake = await serve(data, script)
    target = tmp_path / "out.bin"
    with pytest.raises(ProtocolViolation):
        await download_tcp(url(fake), target, TransferOptions(retry=NO_RETRIES))
    assert part_path(target).read_bytes() == data[: len(data) // 2]


async def test_bytes_of_a_stalled_stream_reach_the_disk(
    serve: Callable[[bytes, Script], Awaitable[FakeServer]], tmp_path: Path
) -> None:
    # Far less than a receive buffer arrives, then nothing: the bytes must not wait in
    # memory for the buffer to fill (progress would freeze, a crash would lose them).
    data = os.urandom(3 * MiB)
    sent = 100_000
    stalled = asyncio.Event()

    async def script(writer: asyncio.StreamWriter, get: Get, payload: bytes) -> None:
        writer.write(encode_data_header(get.offset, len(payload)) + payload[:sent])
        await writer.drain()
        await stalled.wait()

    fake = await serve(data, script)
    target = tmp_path / "out.bin"
    part = part_path(target)
    positions: list[int] = []
    task = asyncio.ensure_future(
        download_tcp(
            url(fake), target, TransferOptions(retry=NO_RETRIES, progress=positions.append)
        )
    )
    deadline = asyncio.get_running_loop().time() + 10
    while not (part.exists() and part.stat().st_size == sent):
        assert asyncio.get_running_loop().time() < deadline, "the bytes stayed in memory"
        await asyncio.sleep(0.05)
    assert positions[-1] == sent
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    stalled.set()
    assert part.read_bytes() == data[:sent]
