"""The server's own WebSocket frame reading (``_Receiver`` in ``server/ws.py``), byte by byte.

Binary frames of an upload are read past aiohttp, every other frame is handed to it. These
tests write crafted frames straight to the socket, cut at random points, mixed with pings,
pongs, unmasked and fragmented frames, in one write or with a slow disk, and check that
every byte lands once, in order, and that aiohttp still answers what it should.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from freight.config import ServerConfig
from freight.core import UploadEngine
from freight.protocol.ws_messages import (
    OP_BINARY,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    apply_mask,
    build_frame_header,
)
from freight.server import ws as ws_server
from freight.server.app import create_app
from freight.server.state import ENGINE
from freight.server.ws import WS_SETTINGS, WsSettings
from freight.storage.local_files import LocalPartFile

from .helpers import MiB

KiB = 1024
SMALL = WsSettings(max_frame=16 * KiB, window=64 * KiB, credit=96 * KiB)


def frame(opcode: int, payload: bytes, *, fin: bool = True, masked: bool = True) -> bytes:
    """A client frame, masked with a random key unless ``masked`` is False."""
    key = os.urandom(4) if masked else None
    body = bytearray(payload)
    if key is not None:
        apply_mask(key, body)
    return build_frame_header(opcode, len(payload), key, fin=fin) + body


def text(body: str) -> bytes:
    return frame(OP_TEXT, body.encode())


@asynccontextmanager
async def connected(
    data_dir: Path, settings: WsSettings, rng: random.Random, **options: Any
) -> AsyncIterator[tuple[Wire, UploadEngine]]:
    """A server with ``settings``, and a hand-written WebSocket to it."""
    app = create_app(ServerConfig(data_dir=data_dir))
    app[WS_SETTINGS] = settings
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        url = str(server.make_url("/api/ws"))
        async with aiohttp.ClientSession() as http, http.ws_connect(url, **options) as ws:
            yield Wire(ws, rng), app[ENGINE]
    finally:
        await server.close()


class Wire:
    """A WebSocket whose client half is written by hand; aiohttp reads the server's half."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, rng: random.Random) -> None:
        self.ws = ws
        self.rng = rng
        transport = ws._writer.transport  # aiohttp keeps no public handle on it
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    async def write(self, data: bytes, *, cut: bool = True) -> None:
        """Write ``data`` in pieces of random size, now and then letting the server read."""
        position = 0
        while position < len(data):
            size = self.rng.choice((1, 2, 3, 7, 13, 100, 4096, 70_000)) if cut else len(data)
            self.transport.write(data[position : position + size])
            position += size
            if cut and self.rng.random() < 0.3:
                await asyncio.sleep(0.001)

    async def reply(self) -> dict[str, Any]:
        msg = await self.ws.receive(timeout=20)
        assert msg.type is aiohttp.WSMsgType.TEXT, (msg.type, msg.data)
        body = msg.json()
        assert isinstance(body, dict)
        return body


def data_frames(data: bytes, rng: random.Random, max_frame: int) -> list[tuple[int, bytes]]:
    """``data`` as (bytes of it, wire bytes) of every kind a client may send, in order."""
    out: list[tuple[int, bytes]] = []
    position = 0
    while position < len(data):
        size = min(rng.choice((0, 1, 5, 126, 4000, 65_535, 65_536, max_frame)), max_frame)
        piece = data[position : position + size]
        kind = rng.random()
        if kind < 0.1 and len(piece) > 1:  # one message in two fragments, a ping between
            half = len(piece) // 2
            wire = frame(OP_BINARY, piece[:half], fin=False)
            wire += frame(OP_PING, b"hi") + frame(OP_CONTINUATION, piece[half:])
        elif kind < 0.2:
            wire = frame(OP_BINARY, piece, masked=False)
        elif kind < 0.3:
            wire = frame(OP_PONG, b"") + frame(OP_BINARY, piece)
        else:
            wire = frame(OP_BINARY, piece)
        out.append((len(piece), wire))
        position += len(piece)
    return out


async def upload(wire: Wire, data: bytes, settings: WsSettings, *, cut: bool) -> dict[str, Any]:
    """A whole upload within the credit; returns ``finished``."""
    await wire.write(text(f'{{"op":"start","name":"f","size":{len(data)}}}'), cut=cut)
    ready = await wire.reply()
    assert ready["op"] == "ready", ready
    limit, position = ready["offset"] + ready["credit"], 0
    for size, bytes_on_wire in data_frames(data, wire.rng, settings.max_frame):
        while position + size > limit:
            grant = await wire.reply()
            assert grant["op"] == "credit", grant
            limit = grant["offset"] + grant["credit"]
        await wire.write(bytes_on_wire, cut=cut)
        position += size
    sha256 = hashlib.sha256(data).hexdigest()
    await wire.write(text(f'{{"op":"done","sha256":"{sha256}"}}'), cut=cut)
    while (body := await wire.reply())["op"] == "credit":
        pass
    return body


@pytest.mark.parametrize("seed", range(6))
async def test_frames_cut_anywhere_arrive_whole_and_in_order(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    data = rng.randbytes(rng.randint(200 * KiB, 400 * KiB))
    async with connected(tmp_path / "data", SMALL, rng) as (wire, engine):
        finished = await upload(wire, data, SMALL, cut=True)
        assert finished["op"] == "finished", finished
        assert finished["sha256"] == hashlib.sha256(data).hexdigest()
        stored = (tmp_path / "data" / "files" / finished["id"]).read_bytes()
        assert stored == data
        assert engine.bytes_written_total == len(data)


async def test_a_whole_session_in_one_write(tmp_path: Path) -> None:
    """Frames read past a full window (and ``done`` after them) wait for the grant."""
    rng = random.Random(7)
    data = rng.randbytes(SMALL.credit)  # all of it fits the opening credit
    body = b"".join(wire for _, wire in data_frames(data, rng, SMALL.max_frame))
    sha256 = hashlib.sha256(data).hexdigest()
    async with connected(tmp_path / "data", SMALL, rng) as (wire, _):
        await wire.write(text(f'{{"op":"start","name":"f","size":{len(data)}}}'), cut=False)
        assert (await wire.reply())["credit"] == len(data)
        await wire.write(body + text(f'{{"op":"done","sha256":"{sha256}"}}'), cut=False)
        replies = [await wire.reply(), await wire.reply()]
    assert [r["op"] for r in replies] == ["credit", "finished"]
    assert SMALL.window <= replies[0]["offset"] < SMALL.window + SMALL.max_frame  # a frame end
    assert replies[1]["sha256"] == sha256


async def test_a_ping_in_the_middle_of_the_data_is_answered(tmp_path: Path) -> None:
    rng = random.Random(3)
    async with connected(tmp_path / "data", SMALL, rng, autoping=False) as (wire, _):
        await wire.write(text('{"op":"start","name":"f","size":1000000}'))
        assert (await wire.reply())["op"] == "ready"
        await wire.write(frame(OP_BINARY, b"x" * 5000) + frame(OP_PING, b"are you there"))
        msg = await wire.ws.receive(timeout=10)
        assert (msg.type, msg.data) == (aiohttp.WSMsgType.PONG, b"are you there")
        await wire.write(frame(OP_BINARY, b"y" * 5000) + text('{"op":"done"}'))
        error = await wire.reply()
    assert (error["code"], error["missing"]) == ("ERR_UPLOAD_INCOMPLETE", [[10000, 1000000]])


async def test_binary_frames_count_as_signs_of_life(tmp_path: Path) -> None:
    """aiohttp's heartbeat and idle timeout never see these bytes, yet must not fire."""
    settings = WsSettings(
        max_frame=16 * KiB, window=64 * KiB, credit=96 * KiB, heartbeat=0.4, idle_timeout=0.6
    )
    rng = random.Random(5)
    data = rng.randbytes(76 * KiB)
    # autoping=False: the client never answers the server's pings.
    async with connected(tmp_path / "data", settings, rng, autoping=False) as (wire, _):
        await wire.write(text(f'{{"op":"start","name":"f","size":{len(data)}}}'))
        assert (await wire.reply())["op"] == "ready"
        started = time.monotonic()
        for start in range(0, 60 * KiB, 1024):  # 1.5 s of a trickle of frames
            await wire.write(frame(OP_BINARY, data[start : start + 1024]), cut=False)
            await asyncio.sleep(0.025)
        slow = frame(OP_BINARY, data[60 * KiB :])  # then one frame over about 1 s
        for start in range(0, len(slow), 200):
            await wire.write(slow[start : start + 200], cut=False)
            await asyncio.sleep(0.01)
        assert time.monotonic() - started > 3 * settings.idle_timeout
        await wire.write(text('{"op":"done"}'))
        while (body := await wire.reply())["op"] == "credit":
            pass
    assert body["op"] == "finished", body
    assert body["sha256"] == hashlib.sha256(data).hexdigest()


async def test_a_slow_disk_holds_reading_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_at = LocalPartFile.write_at

    def slow_write_at(self: LocalPartFile, offset: int, data: Any) -> None:
        time.sleep(0.01)
        write_at(self, offset, data)

    monkeypatch.setattr(LocalPartFile, "write_at", slow_write_at)
    rng = random.Random(11)
    data = rng.randbytes(12 * MiB + 12345)
    settings = WsSettings()
    async with connected(tmp_path / "data", settings, rng) as (wire, engine):
        finished = await upload(wire, data, settings, cut=False)
    assert finished["sha256"] == hashlib.sha256(data).hexdigest()
    assert (tmp_path / "data" / "files" / finished["id"]).read_bytes() == data
    assert engine.bytes_written_total == len(data)


async def test_where_the_socket_cannot_be_taken_over_aiohttp_reads_every_frame(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A TLS connection stays with aiohttp: the same session must work through it."""

    def no_receiver(request: Any, *, alive_every: float) -> None:
        return None

    monkeypatch.setattr(ws_server.Receiver, "take_over", no_receiver)
    rng = random.Random(13)
    data = rng.randbytes(300 * KiB)
    async with connected(tmp_path / "data", SMALL, rng) as (wire, engine):
        finished = await upload(wire, data, SMALL, cut=True)
        assert finished["sha256"] == hashlib.sha256(data).hexdigest()
        assert (tmp_path / "data" / "files" / finished["id"]).read_bytes() == data
        assert engine.bytes_written_total == len(data)
