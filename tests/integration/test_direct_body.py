"""Large request bodies taken straight from the socket (server/body.py, server/splice.py).

Every test runs both ways a large body can go: spliced socket → pipe → file by a thread
of its own (the default on Linux), and read into the writer's memory buffers (where
splicing is not available, or a request checksum needs to see the bytes).

Raw sockets on loopback, so the tests control exactly how the bytes arrive: the headers
and the start of the body in one segment (aiohttp parses part of the body before the
handler runs), the rest in uneven pieces, or a connection cut half way.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from tus_fixtures import OCTETS, live_server

from freight.core import writer as writer_module
from freight.core.pipes import PIPE_SIZE, SplicePipe, splicing_available
from freight.server.body import DIRECT_MIN

MiB = 1024 * 1024


@pytest.fixture(params=["splice", "buffers"], autouse=True)
def receive_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Which way bodies go; returns a list that grows by one for each pipe opened."""
    opened: list[int] = []
    if request.param == "buffers":
        monkeypatch.setattr(writer_module, "splicing_available", lambda: False)
        return opened
    if not splicing_available():
        pytest.skip("splice(2) is Linux only")
    real_init = SplicePipe.__init__

    def counting_init(pipe: SplicePipe, size: int = PIPE_SIZE) -> None:
        real_init(pipe, size)
        opened.append(pipe.capacity)

    monkeypatch.setattr(SplicePipe, "__init__", counting_init)
    return opened


def _patch_head(url: str, offset: int, length: int) -> bytes:
    parts = urlsplit(url)
    lines = [
        f"PATCH {parts.path} HTTP/1.1",
        f"Host: {parts.netloc}",
        "Tus-Resumable: 1.0.0",
        f"Upload-Offset: {offset}",
        f"Content-Type: {OCTETS}",
        f"Content-Length: {length}",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def _connect(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    return await asyncio.open_connection(parts.hostname, parts.port)


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    status_line, *header_lines = head.decode().split("\r\n")
    headers = {}
    for line in header_lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    if length:
        await reader.readexactly(length)
    return int(status_line.split()[1]), headers


async def _send_in_pieces(writer: asyncio.StreamWriter, data: bytes, sizes: list[int]) -> None:
    position, turn = 0, 0
    while position < len(data):
        size = sizes[turn % len(sizes)]
        writer.write(data[position : position + size])
        await writer.drain()
        position += size
        turn += 1


async def test_large_patch_is_stored_exactly_and_the_connection_closes(
    tmp_path: Path, receive_path: list[int]
) -> None:
    body = os.urandom(DIRECT_MIN * 3 + 12345)
    async with live_server(tmp_path, fsync="never") as server:
        url = await server.create(len(body))
        reader, writer = await _connect(url)
        # Headers and the first 100 KiB together: aiohttp has parsed some body already.
        writer.write(_patch_head(url, 0, len(body)) + body[: 100 * 1024])
        await _send_in_pieces(writer, body[100 * 1024 :], [1, 65536, 3 * MiB + 7, 4096])
        status, headers = await _read_response(reader)
        assert status == 204
        assert headers["upload-offset"] == str(len(body))
        assert headers["connection"].lower() == "close"
        assert await asyncio.wait_for(reader.read(), 10) == b""  # the server closed it
        writer.close()
        assert server.part_bytes(url) == body
        session = await server.engine.get(url.rsplit("/", 1)[1])
        assert session.sha256 == hashlib.sha256(body).hexdigest()
        assert bool(receive_path) == writer_module.splicing_available()


async def test_small_patch_keeps_the_connection_alive(tmp_path: Path) -> None:
    body = os.urandom(DIRECT_MIN - 1)
    async with live_server(tmp_path, fsync="never") as server:
        url = await server.create(len(body) + 10)
        reader, writer = await _connect(url)
        writer.write(_patch_head(url, 0, len(body)) + body)
        status, headers = await _read_response(reader)
        assert status == 204
        assert headers.get("connection", "keep-alive").lower() != "close"
        writer.write(_patch_head(url, len(body), 10) + b"0123456789")
        status, headers = await _read_response(reader)
        assert status == 204
        assert headers["upload-offset"] == str(len(body) + 10)
        writer.close()
        assert server.part_bytes(url) == body + b"0123456789"


async def test_a_cut_connection_keeps_what_arrived_and_the_upload_resumes(
    tmp_path: Path,
) -> None:
    body = os.urandom(24 * MiB)
    cut = 10 * MiB + 333
    async with live_server(tmp_path, fsync="batch", sync_every=MiB) as server:
        url = await server.create(len(body))
        _reader, writer = await _connect(url)
        writer.write(_patch_head(url, 0, len(body)))
        await _send_in_pieces(writer, body[:cut], [MiB])
        await asyncio.sleep(0.3)
        writer.transport.abort()
        for _ in range(100):  # the server notices the loss and records what is durable
            kept = await server.offset(url)
            if kept and not server.engine.uploads.by_id[url.rsplit("/", 1)[1]].writers:
                break
            await asyncio.sleep(0.05)
        assert 0 < kept <= cut
        assert server.part_bytes(url)[:kept] == body[:kept]
        resp = await server.patch(url, kept, body[kept:])
        assert resp.status == 204, resp.status
        assert server.part_bytes(url) == body
        session = await server.engine.get(url.rsplit("/", 1)[1])
        assert session.sha256 == hashlib.sha256(body).hexdigest()


async def test_a_body_shorter_than_its_length_keeps_nothing_wrong(tmp_path: Path) -> None:
    body = os.urandom(8 * MiB)
    async with live_server(tmp_path, fsync="never") as server:
        url = await server.create(16 * MiB)
        reader, writer = await _connect(url)
        writer.write(_patch_head(url, 0, 16 * MiB) + body)
        await writer.drain()
        writer.write_eof()  # half-close: the body ends 8 MiB early
        await asyncio.wait_for(reader.read(), 10)
        writer.close()
        for _ in range(100):
            if not server.engine.uploads.by_id[url.rsplit("/", 1)[1]].writers:
                break
            await asyncio.sleep(0.05)
        kept = await server.offset(url)
        assert kept <= len(body)
        assert server.part_bytes(url)[:kept] == body[:kept]


async def test_a_large_chunk_is_counted_and_stored(tmp_path: Path) -> None:
    chunk = os.urandom(2 * DIRECT_MIN)
    async with live_server(tmp_path, fsync="never") as server:
        async with server.http.post(
            f"{server.url}/api/uploads",
            json={"name": "big.bin", "size": len(chunk) * 2, "chunk_size": len(chunk)},
        ) as resp:
            assert resp.status == 201, await resp.text()
            upload_id = (await resp.json())["id"]
        for n in (1, 0, 1):
            async with server.http.put(
                f"{server.url}/api/uploads/{upload_id}/chunks/{n}", data=chunk
            ) as resp:
                reply = await resp.json()
                assert resp.status == 200, reply
        assert reply["duplicate"] is True
        assert reply["wire_bytes"] == 3 * len(chunk)
        async with server.http.post(f"{server.url}/api/uploads/{upload_id}/complete") as resp:
            done = await resp.json()
            assert resp.status == 200, done
        assert done["sha256"] == hashlib.sha256(chunk + chunk).hexdigest()


async def test_a_new_patch_takes_over_from_a_stalled_one(tmp_path: Path) -> None:
    """tus clients retry at once after a network error; the old request must not lock them out."""
    body = os.urandom(12 * MiB)
    async with live_server(tmp_path, fsync="batch", sync_every=MiB) as server:
        url = await server.create(len(body))
        _reader, stalled = await _connect(url)
        stalled.write(_patch_head(url, 0, len(body)) + body[: 5 * MiB])
        await stalled.drain()
        await asyncio.sleep(0.3)  # the first bytes are written; then the link goes quiet
        started = asyncio.get_running_loop().time()
        resp = await server.patch(url, 0, body)
        if resp.status == 409:  # the stalled request kept what it had: go on from there
            offset = int(resp.headers["Upload-Offset"])
            assert 0 < offset <= 5 * MiB
            resp = await server.patch(url, offset, body[offset:])
        assert resp.status == 204, resp.status
        assert asyncio.get_running_loop().time() - started < 5
        assert server.part_bytes(url) == body
        stalled.close()
