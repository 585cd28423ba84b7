"""Request bodies over plain http go from the file to the socket with ``sendfile``.

Against a real ``freight serve`` (and, for a server that refuses a body before it ends, a
real aiohttp app): the tus and chunk clients hand every byte of the body to ``sendfile``
and read the file only once, to hash it; a server that answers early is heard at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

import freight.client.hashing
import freight.client.sendfile_http
from freight.client.chunk_reader import ChunkReader
from freight.client.chunks import upload_chunks
from freight.client.filebody import FileBody
from freight.client.hashing import SplitHasher
from freight.client.http import open_session
from freight.client.options import TransferOptions
from freight.client.sendfile_http import can_sendfile, send_file_request
from freight.client.tcp_upload import upload_tcp
from freight.client.upload import upload_file

MiB = 1024 * 1024


class _Moves:
    """Bytes moved by ``sendfile``, read through Python for a body, and hashed from disk."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sendfile_bytes = 0
        self.body_reads = 0
        self.chunk_reads = 0
        self.disk_bytes = 0
        sendfile = os.sendfile
        read_at = FileBody._read_at
        read_into = ChunkReader.read_into
        from_disk = SplitHasher._read_from_disk

        def counting_sendfile(out: int, fd: int, offset: int | None, count: int) -> int:
            moved = sendfile(out, fd, offset, count)
            self.sendfile_bytes += moved
            return moved

        def counting_read_at(body: FileBody, offset: int) -> bytes:
            chunk = read_at(body, offset)
            self.body_reads += len(chunk)
            return chunk

        def counting_read_into(reader: ChunkReader, view: memoryview, start: int) -> None:
            read_into(reader, view, start)
            self.chunk_reads += len(view)

        def counting_from_disk(hasher: SplitHasher) -> None:
            before = hasher.hashed
            from_disk(hasher)
            self.disk_bytes += hasher.hashed - before

        monkeypatch.setattr(freight.client.sendfile_http.os, "sendfile", counting_sendfile)
        monkeypatch.setattr(FileBody, "_read_at", counting_read_at)
        monkeypatch.setattr(ChunkReader, "read_into", counting_read_into)
        monkeypatch.setattr(SplitHasher, "_read_from_disk", counting_from_disk)


def _source(tmp_path: Path, size: int) -> tuple[Path, bytes]:
    data = os.urandom(size)
    path = tmp_path / "source.bin"
    path.write_bytes(data)
    return path, data


async def _stored(url: str) -> bytes:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == 200
        return await resp.read()


async def test_a_tus_patch_body_goes_with_sendfile_and_the_file_is_read_once(
    freight_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    moves = _Moves(monkeypatch)
    source, data = _source(tmp_path, 6 * MiB + 11)
    seen: list[int] = []
    sent = await upload_file(source, freight_server.url, TransferOptions(progress=seen.append))
    assert sent.sha256 == hashlib.sha256(data).hexdigest() and sent.verified
    assert moves.sendfile_bytes == len(data)  # the whole body, by the kernel
    assert moves.body_reads == 0  # nothing read through Python to be sent
    assert moves.disk_bytes == len(data)  # read once, to be hashed
    assert seen[-1] == len(data) and len(seen) >= 6  # progress about once per MiB
    assert await _stored(sent.url) == data


async def test_chunk_bodies_go_with_sendfile_and_the_file_is_read_once(
    freight_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    moves = _Moves(monkeypatch)
    connects: list[URL] = []
    connect = freight.client.sendfile_http._connect

    async def counting_connect(url: URL, timeout: float) -> Any:
        connects.append(url)
        return await connect(url, timeout)

    monkeypatch.setattr(freight.client.sendfile_http, "_connect", counting_connect)
    source, data = _source(tmp_path, 9 * MiB + 5)
    sent = await upload_chunks(source, freight_server.url, requested_chunk_size=MiB, parallel=3)
    assert sent.sha256 == hashlib.sha256(data).hexdigest() and sent.verified
    assert len(connects) <= 3  # ten chunks over the three streams' kept-alive connections
    assert moves.sendfile_bytes == len(data)
    assert moves.body_reads == moves.chunk_reads == 0  # not held, not streamed by Python
    assert moves.disk_bytes == len(data)
    assert await _stored(sent.url) == data


async def test_chunks_with_digests_are_read_once_for_both_hashes_then_sent_with_sendfile(
    freight_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    moves = _Moves(monkeypatch)
    source, data = _source(tmp_path, 5 * MiB + 1)
    sent = await upload_chunks(
        source, freight_server.url, requested_chunk_size=MiB, parallel=2, chunk_digests=True
    )
    assert sent.sha256 == hashlib.sha256(data).hexdigest()
    assert moves.sendfile_bytes == len(data)
    assert moves.body_reads == moves.chunk_reads == moves.disk_bytes == 0
    assert await _stored(sent.url) == data


class _HashTrail:
    """How far ahead of what ``sendfile`` had sent the file's hash ever got, on a link that
    takes 10 ms per piece."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.hashers: list[SplitHasher] = []
        self.sent = 0
        self.ahead = 0
        init = SplitHasher.__init__
        sendfile = os.sendfile

        def capturing_init(hasher: SplitHasher, *args: Any, **kwargs: Any) -> None:
            init(hasher, *args, **kwargs)
            self.hashers.append(hasher)

        def slow_sendfile(out: int, fd: int, offset: int | None, count: int) -> int:
            moved = sendfile(out, fd, offset, count)
            time.sleep(0.01)
            self.sent = max(self.sent, (offset or 0) + moved)
            hashed = max((hasher.hashed for hasher in self.hashers), default=0)
            self.ahead = max(self.ahead, hashed - self.sent)
            return moved

        monkeypatch.setattr(SplitHasher, "__init__", capturing_init)
        monkeypatch.setattr(freight.client.sendfile_http.os, "sendfile", slow_sendfile)


async def test_the_hash_follows_a_tus_body_and_never_reads_ahead_of_it(
    freight_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hashed from the pages the send has just read: a hash that raced ahead would read a
    file larger than the page cache from disk twice."""
    trail = _HashTrail(monkeypatch)
    source, data = _source(tmp_path, 24 * MiB)
    sent = await upload_file(source, freight_server.url)
    assert sent.sha256 == hashlib.sha256(data).hexdigest()
    assert trail.sent == len(data)
    assert trail.ahead <= 0


async def test_the_hash_follows_tcp_data_and_never_reads_ahead_of_it(
    server_factory: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = server_factory(data_dir=tmp_path / "data", args=["--tcp-port", "0"]).start()
    url = await _tcp_url(server)
    trail = _HashTrail(monkeypatch)
    source, data = _source(tmp_path, 24 * MiB)
    sent = await upload_tcp(source, url)
    assert sent.sha256 == hashlib.sha256(data).hexdigest() and sent.verified
    assert trail.sent == len(data)
    assert trail.ahead <= 0


async def test_the_hash_follows_the_chunks_handed_to_the_senders(
    freight_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At most the chunks queued for the senders ahead of what was sent (3 here)."""
    trail = _HashTrail(monkeypatch)
    source, data = _source(tmp_path, 24 * MiB)
    sent = await upload_chunks(source, freight_server.url, requested_chunk_size=MiB, parallel=2)
    assert sent.sha256 == hashlib.sha256(data).hexdigest() and sent.verified
    assert trail.sent == len(data)
    assert trail.ahead <= 3 * MiB


async def test_a_send_waits_for_a_hash_that_fell_too_far_behind(
    freight_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other way round: a hash slower than the link holds the send back to within
    HASH_LAG of it (here 2 MiB), so it still reads what the send read a moment ago."""
    monkeypatch.setattr(freight.client.hashing, "HASH_LAG", 2 * MiB, raising=False)
    real_sha256 = hashlib.sha256

    class _SlowSha:
        def __init__(self) -> None:
            self._sha = real_sha256()

        def update(self, data: Any) -> None:
            time.sleep(0.01)  # in the hash's own thread
            self._sha.update(data)

        def digest(self) -> bytes:
            return self._sha.digest()

    monkeypatch.setattr(freight.client.hashing, "hashlib", SimpleNamespace(sha256=_SlowSha))
    hashers: list[SplitHasher] = []
    init = SplitHasher.__init__
    monkeypatch.setattr(
        SplitHasher,
        "__init__",
        lambda hasher, *a, **k: (init(hasher, *a, **k), hashers.append(hasher))[0],
    )
    behind = [0]
    sendfile = os.sendfile

    def watching_sendfile(out: int, fd: int, offset: int | None, count: int) -> int:
        hashed = max((hasher.hashed for hasher in hashers), default=0)
        behind[0] = max(behind[0], (offset or 0) - hashed)
        return sendfile(out, fd, offset, count)

    monkeypatch.setattr(freight.client.sendfile_http.os, "sendfile", watching_sendfile)
    source, data = _source(tmp_path, 24 * MiB)
    sent = await upload_file(source, freight_server.url)
    assert sent.sha256 == real_sha256(data).hexdigest()
    assert behind[0] <= 3 * MiB  # the lag, and the piece on its way


async def _tcp_url(server: Any) -> str:
    for _ in range(500):
        for line in list(server.output_tail):
            if found := re.search(r"tcp listening on (tcp://\S+)", line):
                return found.group(1)
        await asyncio.sleep(0.02)
    raise AssertionError(f"no tcp listening line: {list(server.output_tail)}")


def test_only_plain_http_bodies_go_with_sendfile() -> None:
    assert can_sendfile(URL("http://127.0.0.1:8080/files/x"))
    assert not can_sendfile(URL("https://127.0.0.1:8443/files/x"))  # TLS: aiohttp's path


async def test_a_server_that_refuses_the_body_early_is_heard_at_once(tmp_path: Path) -> None:
    """The server answers 413 without reading a 64 MiB body: the answer comes back (not a
    lost connection), long before the stall timeout."""

    async def refuse(request: web.Request) -> web.Response:
        return web.json_response(
            {"code": "ERR_TOO_LARGE", "message": "far too large"},
            status=413,
            headers={"Connection": "close"},
        )

    app = web.Application()
    app.router.add_patch("/files/x", refuse)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    source, data = _source(tmp_path, 64 * MiB)
    try:
        async with open_session() as session:
            started = time.monotonic()
            resp = await send_file_request(
                session,
                "PATCH",
                URL(f"http://127.0.0.1:{port}/files/x"),
                {"Content-Length": str(len(data))},
                source,
                0,
                len(data),
                stall_timeout=30.0,
            )
            elapsed = time.monotonic() - started
    finally:
        await runner.cleanup()
    assert resp.status == 413
    assert resp.json_object()["message"] == "far too large"
    assert elapsed < 10.0


async def test_an_answer_to_expect_100_continue_is_returned_without_the_body(
    tmp_path: Path,
) -> None:
    received: list[int] = []

    async def conflict(request: web.Request) -> web.Response:
        received.append(len(await request.content.read(1)) if request.can_read_body else 0)
        return web.json_response({"code": "ERR_PIECE_OFFSET", "chunk_offset": 5}, status=409)

    async def refuse_before_the_body(request: web.Request) -> web.Response | None:
        raise web.HTTPConflict(text='{"code": "ERR_PIECE_OFFSET", "chunk_offset": 5}')

    app = web.Application()
    app.router.add_route("PUT", "/c", conflict, expect_handler=refuse_before_the_body)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    source, data = _source(tmp_path, MiB)
    try:
        async with open_session() as session:
            resp = await asyncio.wait_for(
                send_file_request(
                    session,
                    "PUT",
                    URL(f"http://127.0.0.1:{port}/c"),
                    {"Content-Length": str(len(data))},
                    source,
                    0,
                    len(data),
                    stall_timeout=30.0,
                    expect100=True,
                ),
                20.0,
            )
    finally:
        await runner.cleanup()
    assert resp.status == 409 and resp.json_object()["chunk_offset"] == 5
    assert received == []  # the handler never ran: no body was sent
