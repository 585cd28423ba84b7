"""What a WebSocket client that never uploads may cost: ``/api/ws`` limits on real sockets.

Silent upgrades (no opening message) hold little memory, are closed after the auth
timeout and are bounded in number; a client that only answers pings is idle; refusals
before the upgrade are JSON errors with the API's statuses; oversized control messages
and early binary data are refused from their frame header, before their payload arrives.
The memory figures come from a server in its own process (``ws_server_process.py``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from freight.config import ServerConfig
from freight.protocol.ws_messages import MAX_CONTROL_SIZE, OP_BINARY, OP_TEXT
from freight.server.app import create_app
from freight.server.ws import WS_SETTINGS, WsSettings

from .test_memory import status_kib

KiB = 1024
TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
OLD_COST_KIB = 271  # what a silent upgrade held before (its 256 KiB read buffer among it)


# servers ----------------------------------------------------------------------------------


@pytest.fixture
def server_process(tmp_path: Path) -> Iterator[Any]:
    """Starts ``ws_server_process.py`` with given settings; returns (pid, port)."""
    started: list[subprocess.Popen[str]] = []

    def start(token: str | None, **settings: Any) -> tuple[int, int]:
        script = Path(__file__).with_name("ws_server_process.py")
        args = [str(tmp_path / "data"), token or "", json.dumps(settings)]
        proc = subprocess.Popen(
            [sys.executable, str(script), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        started.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "listening on" in line, line
        return proc.pid, int(line.split("http://127.0.0.1:")[1].split()[0])

    yield start
    for proc in started:
        proc.terminate()
        proc.wait(10)


@asynccontextmanager
async def app_server(tmp_path: Path, settings: WsSettings, token: str | None) -> AsyncIterator[str]:
    """A server in this process; yields its base URL."""
    app = create_app(ServerConfig(data_dir=tmp_path / "data", token=token))
    app[WS_SETTINGS] = settings
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


# a hand-made client -----------------------------------------------------------------------


def frame(opcode: int, payload: bytes, *, length: int | None = None) -> bytes:
    """A masked client frame (zero mask); ``length`` may claim more than ``payload`` holds."""
    size = len(payload) if length is None else length
    if size < 126:
        header = bytes((0x80 | opcode, 0x80 | size))
    elif size < 65536:
        header = bytes((0x80 | opcode, 0x80 | 126)) + struct.pack("!H", size)
    else:
        header = bytes((0x80 | opcode, 0x80 | 127)) + struct.pack("!Q", size)
    return header + b"\0\0\0\0" + payload


Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def upgrade(port: int, headers: str = "") -> Stream:
    """A WebSocket handshake on a raw socket; returns the stream after the 101."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET /api/ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"{headers}\r\n".encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    return reader, writer


async def server_frames(reader: asyncio.StreamReader) -> list[tuple[int, bytes]]:
    """Every frame the server sends until it closes the connection (opcode, payload)."""
    frames = []
    while header := await reader.read(2):
        if len(header) < 2:
            header += await reader.readexactly(1)
        size = header[1] & 0x7F
        if size == 126:
            size = struct.unpack("!H", await reader.readexactly(2))[0]
        frames.append((header[0] & 0x0F, await reader.readexactly(size)))
    return frames


def error_of(frames: list[tuple[int, bytes]]) -> tuple[str, int]:
    """The ``error`` message's code and the close code of a refused connection."""
    texts = [json.loads(payload) for opcode, payload in frames if opcode == OP_TEXT]
    closes = [struct.unpack("!H", payload[:2])[0] for opcode, payload in frames if opcode == 8]
    assert texts and texts[0]["op"] == "error", frames
    return texts[0]["code"], closes[0]


# silent upgrades --------------------------------------------------------------------------


async def open_silently(port: int, count: int) -> list[tuple[float, Stream]]:
    """``count`` upgrades that never send a message, with the time of each."""
    return [(time.monotonic(), await upgrade(port)) for _ in range(count)]


async def closing_times(opened: list[tuple[float, Stream]]) -> tuple[list[float], list[float]]:
    """For each connection, the seconds from its upgrade to the server's close frame and to
    the end of the connection."""

    async def until_closed(at: float, reader: asyncio.StreamReader) -> tuple[float, float]:
        first = await reader.read(1)
        assert first == b"\x88", first  # a close frame, nothing before it
        closed_frame = time.monotonic() - at
        while await reader.read(4096):
            pass
        return closed_frame, time.monotonic() - at

    times = await asyncio.gather(*(until_closed(at, reader) for at, (reader, _) in opened))
    for _, (_, writer) in opened:
        writer.close()
    return [frame_at for frame_at, _ in times], [end for _, end in times]


async def test_silent_upgrades_cost_little_are_closed_and_their_memory_reused(
    server_process: Any,
) -> None:
    """Before: each held a 256 KiB read buffer (271 KiB in all) until it went away."""
    auth_timeout, close_timeout, count = 2.0, 1.0, 300
    pid, port = server_process(
        TOKEN, auth_timeout=auth_timeout, close_timeout=close_timeout, max_pending=count + 10
    )
    await asyncio.sleep(0.5)
    baseline = status_kib(pid, "VmRSS")
    figures = []
    for _ in range(3):
        opened = await open_silently(port, count)
        await asyncio.sleep(0.3)
        rss_open = status_kib(pid, "VmRSS")
        per_connection = (rss_open - baseline) / count
        assert per_connection < OLD_COST_KIB / 4, (baseline, rss_open, per_connection)
        close_frames, ends = await closing_times(opened)
        await asyncio.sleep(0.5)
        figures.append((rss_open, status_kib(pid, "VmRSS")))
        assert min(close_frames) >= auth_timeout - 0.1
        assert max(close_frames) < auth_timeout + 3.0, max(close_frames)
        assert max(ends) < auth_timeout + close_timeout + 3.0, max(ends)
    print(f"baseline {baseline} KiB; per wave of {count} (open, closed): {figures}")
    # The allocator keeps some of what it handed out, but later waves reuse it: what stays
    # is bounded by one wave's worth, not the number of connections ever made.
    assert figures[-1][1] - baseline < count * OLD_COST_KIB / 4


async def test_pending_connections_are_bounded(tmp_path: Path) -> None:
    settings = WsSettings(max_pending=4, auth_timeout=30)
    async with app_server(tmp_path, settings, TOKEN) as url, aiohttp.ClientSession() as http:
        port = int(url.rsplit(":", 1)[1])
        waiting = [await upgrade(port) for _ in range(4)]
        async with http.get(f"{url}/api/ws", headers=_upgrade_headers()) as resp:
            assert resp.status == 503
            assert (await resp.json())["code"] == "ERR_SERVER_BUSY"
        # The token in a header is never pending, so clients without it cannot lock it out.
        async with http.ws_connect(f"{url}/api/ws", headers=AUTH) as ws:
            await ws.send_json({"op": "start", "name": "a", "size": 1})
            assert (await ws.receive_json(timeout=10))["op"] == "ready"
        # A pending connection that proves the token frees its place.
        reader, writer = waiting.pop()
        start = {"op": "start", "name": "b", "size": 1, "token": TOKEN}
        writer.write(frame(OP_TEXT, json.dumps(start).encode()))
        assert b'"op":"ready"' in await reader.read(4096)
        async with http.ws_connect(f"{url}/api/ws") as ws:
            await ws.send_json({"op": "start", "name": "c", "size": 1, "token": TOKEN})
            assert (await ws.receive_json(timeout=10))["op"] == "ready"
        for _, each in [*waiting, (reader, writer)]:
            each.close()


def _upgrade_headers() -> dict[str, str]:
    key = base64.b64encode(os.urandom(16)).decode()
    return {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": key,
        "Sec-WebSocket-Version": "13",
    }


# idle clients -----------------------------------------------------------------------------


@pytest.mark.parametrize("client_pings", [False, True])
async def test_a_client_that_only_answers_pings_is_idle(tmp_path: Path, client_pings: bool) -> None:
    """Before: every pong restarted aiohttp's receive timeout, so it was never closed."""
    settings = WsSettings(idle_timeout=1.5, heartbeat=0.4)
    async with (
        app_server(tmp_path, settings, None) as url,
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{url}/api/ws", autoping=True) as ws,
    ):
        await ws.send_json({"op": "start", "name": "idle", "size": 1000})
        assert (await ws.receive_json(timeout=10))["op"] == "ready"
        ready_at = time.monotonic()
        while time.monotonic() - ready_at < 10:
            if client_pings:
                await ws.ping(b"still here")
            with contextlib.suppress(TimeoutError):
                msg = await ws.receive(timeout=0.3)
                if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                    break
        closed_after = time.monotonic() - ready_at
        assert ws.close_code == 1001
    assert settings.idle_timeout - 0.1 <= closed_after < settings.idle_timeout + 2.5


async def test_an_opening_that_trickles_in_still_meets_the_auth_timeout(tmp_path: Path) -> None:
    settings = WsSettings(auth_timeout=1.0, close_timeout=0.5)
    async with app_server(tmp_path, settings, TOKEN) as url:
        reader, writer = await upgrade(int(url.rsplit(":", 1)[1]))
        opening = frame(OP_TEXT, json.dumps({"op": "start", "name": "x", "size": 1}).encode())
        started = time.monotonic()

        async def trickle() -> None:  # one byte every 0.2 s: never done in time
            for byte in opening[:-1]:
                writer.write(bytes((byte,)))
                await asyncio.sleep(0.2)

        sender = asyncio.ensure_future(trickle())
        try:
            frames = await asyncio.wait_for(server_frames(reader), 10)
        finally:
            sender.cancel()
            writer.close()
    assert frames[-1][0] == 8 and struct.unpack("!H", frames[-1][1][:2])[0] == 1001
    assert time.monotonic() - started < settings.auth_timeout + 3


# refusals before the upgrade --------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "headers", "status", "code"),
    [
        (TOKEN, {}, 401, "ERR_UNAUTHORIZED"),  # before: 400 from aiohttp, in plain text
        (TOKEN, {"Authorization": "Bearer wrong"}, 401, "ERR_UNAUTHORIZED"),
        (TOKEN, AUTH, 400, "ERR_BAD_REQUEST"),
        (None, {}, 400, "ERR_BAD_REQUEST"),
    ],
)
async def test_a_request_that_is_no_upgrade_gets_a_json_error(
    tmp_path: Path, token: str | None, headers: dict[str, str], status: int, code: str
) -> None:
    async with (
        app_server(tmp_path, WsSettings(), token) as url,
        aiohttp.ClientSession() as http,
        http.get(f"{url}/api/ws", headers=headers) as resp,
    ):
        assert resp.status == status
        assert resp.content_type == "application/json"
        assert (await resp.json())["code"] == code


# oversized and early frames ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("opcode", "length", "code", "close"),
    [
        (OP_TEXT, MAX_CONTROL_SIZE + 1, "ERR_INVALID_MESSAGE", 4400),
        (OP_TEXT, 200 * KiB, "ERR_INVALID_MESSAGE", 4400),
        (OP_BINARY, 200 * KiB, "ERR_UNEXPECTED_MESSAGE", 4400),
    ],
)
async def test_oversized_or_early_frames_are_refused_from_their_header(
    tmp_path: Path, opcode: int, length: int, code: str, close: int
) -> None:
    """Before: aiohttp waited for (and would have buffered) up to 256 KiB of payload."""
    async with app_server(tmp_path, WsSettings(), TOKEN) as url:
        reader, writer = await upgrade(int(url.rsplit(":", 1)[1]))
        writer.write(frame(opcode, b"x" * 100, length=length))  # the rest never comes
        frames = await asyncio.wait_for(server_frames(reader), 10)
        writer.close()
    assert error_of(frames) == (code, close)


async def test_an_oversized_text_frame_during_the_upload_is_refused_from_its_header(
    tmp_path: Path,
) -> None:
    async with app_server(tmp_path, WsSettings(), None) as url:
        reader, writer = await upgrade(int(url.rsplit(":", 1)[1]))
        writer.write(frame(OP_TEXT, json.dumps({"op": "start", "name": "x", "size": 10}).encode()))
        assert b'"op":"ready"' in await reader.read(4096)
        writer.write(frame(OP_BINARY, b"y" * 5) + frame(OP_TEXT, b"{", length=100 * KiB))
        frames = await asyncio.wait_for(server_frames(reader), 10)
        writer.close()
    assert error_of(frames) == ("ERR_INVALID_MESSAGE", 4400)
