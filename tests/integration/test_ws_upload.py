"""WebSocket uploads at ``/api/ws`` (docs/websocket.md) on real loopback sockets.

Two clients drive the server: freight's own (:func:`upload_file_ws`) and :class:`RawWs`, a
few lines written from docs/websocket.md on aiohttp's bare WebSocket client, which also
sends data generated on the fly (a 1 GiB upload never sits in memory or on the client's
disk). Cuts come from the CLI tests' fault-injecting proxy.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import sys
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from freight.client import ResumeStore, RetryNotice, RetryPolicy
from freight.client.errors import ConnectionFailed, DigestMismatch, ServerError
from freight.client.options import TransferOptions
from freight.client.resume_store import UploadKey
from freight.client.ws import upload_file_ws, ws_endpoint
from freight.config import FsyncPolicy, ServerConfig
from freight.core import UploadEngine
from freight.core.events import UploadEventKind
from freight.server.app import create_app
from freight.server.state import ENGINE
from freight.server.ws import WS_SETTINGS, WsSettings

from .helpers import MiB, PatternStream, download
from .test_memory import RSS_LIMIT_KIB, RssSampler, status_kib

sys.path.insert(0, str(Path(__file__).parents[1] / "cli"))
from cli_support import ChaosProxy, _Rule

WINDOW = WsSettings().window
MAX_FRAME = WsSettings().max_frame
CREDIT = WsSettings().credit
FAST_RETRIES = RetryPolicy(attempts=8, initial_delay=0.05, max_delay=0.2)


# a server in this process ---------------------------------------------------------------


@dataclass
class LiveWs:
    url: str
    engine: UploadEngine
    http: aiohttp.ClientSession
    data_dir: Path

    @property
    def ws_url(self) -> str:
        return f"{self.url}/api/ws"

    @asynccontextmanager
    async def connect(self, **kwargs: Any) -> AsyncIterator[RawWs]:
        async with self.http.ws_connect(self.ws_url, **kwargs) as ws:
            yield RawWs(ws)

    async def offset(self, upload_id: str) -> int:
        return (await self.engine.get(upload_id)).offset

    @asynccontextmanager
    async def resume(self, upload_id: str) -> AsyncIterator[tuple[RawWs, dict[str, Any]]]:
        """Resume ``upload_id``, retrying while the previous connection still holds it."""
        for _ in range(100):
            async with self.connect() as ws:
                await ws.send(op="resume", id=upload_id)
                reply = await ws.reply()
                if reply["op"] != "error" or reply["code"] != "ERR_UPLOAD_LOCKED":
                    yield ws, reply
                    return
            await asyncio.sleep(0.05)
        raise AssertionError(f"upload {upload_id} stayed locked")


@asynccontextmanager
async def ws_server(
    data_dir: Path, settings: WsSettings | None = None, **config: Any
) -> AsyncIterator[LiveWs]:
    app = create_app(ServerConfig(data_dir=data_dir, **config))
    if settings is not None:
        app[WS_SETTINGS] = settings
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as http:
            url = str(server.make_url("")).rstrip("/")
            yield LiveWs(url, app[ENGINE], http, data_dir)
    finally:
        await server.close()


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[LiveWs]:
    async with ws_server(tmp_path / "data") as server:
        yield server


# a client written from docs/websocket.md --------------------------------------------------


class RawWs:
    """JSON text frames for control, binary frames for data, credit obeyed."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws

    async def send(self, **body: Any) -> None:
        await self.ws.send_str(json.dumps(body))

    async def reply(self, timeout: float = 30.0) -> dict[str, Any]:
        msg = await self.ws.receive(timeout=timeout)
        assert msg.type is aiohttp.WSMsgType.TEXT, (msg.type, msg.data, self.ws.close_code)
        body = json.loads(msg.data)
        assert isinstance(body, dict)
        return body

    async def closed(self, timeout: float = 10.0) -> int | None:
        """Wait for the server's close; returns its close code."""
        msg = await self.ws.receive(timeout=timeout)
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), msg
        return self.ws.close_code

    async def error(self) -> tuple[dict[str, Any], int | None]:
        """The error message the server sends, and the close code that follows it."""
        body = await self.reply()
        assert body["op"] == "error", body
        return body, await self.closed()

    async def stream(self, ready: dict[str, Any], chunks: Iterable[bytes]) -> list[dict[str, Any]]:
        """Send ``chunks`` (each at most one frame) within the credit; returns the grants."""
        limit = ready["offset"] + ready["credit"]
        position = ready["offset"]
        grants: list[dict[str, Any]] = []
        for chunk in chunks:
            while position + len(chunk) > limit:
                grant = await self.reply()
                assert grant["op"] == "credit", grant
                assert grant["offset"] <= position
                grants.append(grant)
                limit = grant["offset"] + grant["credit"]
            await self.ws.send_bytes(chunk)
            position += len(chunk)
        return grants

    async def upload(self, name: str, data: PatternStream, **start: Any) -> dict[str, Any]:
        """A whole upload: start, stream, done; returns ``finished``."""
        await self.send(op="start", name=name, size=data.size, **start)
        ready = await self.reply()
        assert ready["op"] == "ready", ready
        assert (ready["offset"], ready["size"]) == (0, data.size)
        await self.stream(ready, frames(data.chunks(), ready["max_frame"]))
        await self.send(op="done", sha256=data.sha256())
        return await self.finished()

    def transport(self) -> asyncio.Transport:
        """The socket underneath, to misbehave below the WebSocket layer."""
        transport = self.ws._writer.transport  # aiohttp keeps no public handle on it
        assert isinstance(transport, asyncio.Transport)
        return transport

    async def finished(self) -> dict[str, Any]:
        while (body := await self.reply())["op"] == "credit":
            pass
        assert body["op"] == "finished", body
        assert await self.closed() == 1000
        return body


def frames(chunks: Iterable[bytes], max_frame: int) -> Iterator[bytes]:
    for chunk in chunks:
        for start in range(0, len(chunk), max_frame):
            yield chunk[start : start + max_frame]


def stored_sha256(live: LiveWs, finished: dict[str, Any]) -> str:
    digest = hashlib.sha256()
    with (live.data_dir / "files" / finished["id"]).open("rb") as file:
        while block := file.read(MiB):
            digest.update(block)
    return digest.hexdigest()


# round trips -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size", [0, 1, WINDOW, WINDOW + MAX_FRAME + 7], ids=["empty", "one-byte", "window", "more"]
)
async def test_round_trip(live: LiveWs, size: int) -> None:
    data = PatternStream(size, seed=size)
    async with live.connect() as ws:
        finished = await ws.upload("f.bin", data)
    assert finished["size"] == size
    assert finished["sha256"] == data.sha256()
    assert finished["url"] == f"/files/{finished['id']}"
    assert stored_sha256(live, finished) == data.sha256()
    got = await asyncio.to_thread(download, live.url + finished["url"])
    assert (got.status, got.size, got.sha256) == (200, size, data.sha256())


async def test_grants_come_once_per_durable_window(live: LiveWs) -> None:
    data = PatternStream(3 * WINDOW + 5)
    async with live.connect() as ws:
        await ws.send(op="start", name="w.bin", size=data.size)
        ready = await ws.reply()
        assert ready["credit"] == min(CREDIT, data.size)
        assert ready["max_frame"] == MAX_FRAME
        grants = await ws.stream(ready, frames(data.chunks(), MAX_FRAME))
        await ws.send(op="done")
        while (body := await ws.reply())["op"] == "credit":
            grants.append(body)
    assert body["op"] == "finished"
    offsets = [WINDOW, 2 * WINDOW, 3 * WINDOW]
    assert [g["offset"] for g in grants] == offsets
    # Never past the size.
    assert [g["credit"] for g in grants] == [min(o + CREDIT, data.size) - o for o in offsets]


@pytest.mark.slow
async def test_round_trip_of_1_gib_generated_on_the_fly(tmp_path: Path) -> None:
    # fsync never: 1 GiB of syncs measures the disk, not the protocol.
    async with ws_server(tmp_path / "data", fsync=FsyncPolicy.NEVER) as live:
        data = PatternStream(1024 * MiB, seed=7)
        started = time.monotonic()
        async with live.connect() as ws:
            finished = await ws.upload("big.bin", data)
        seconds = time.monotonic() - started
        assert finished["size"] == data.size
        assert finished["sha256"] == data.sha256()
        assert stored_sha256(live, finished) == data.sha256()
        print(f"\n1 GiB over WebSocket in-process: {1024 / seconds:.0f} MiB/s")


@pytest.mark.parametrize("size", [0, 1, WINDOW, 3 * WINDOW + 12345])
async def test_client_library_round_trip(live: LiveWs, tmp_path: Path, size: int) -> None:
    path = tmp_path / "f.bin"
    PatternStream(size, seed=size).write_to(path)
    seen: list[int] = []
    starts: list[tuple[int, int]] = []
    result = await upload_file_ws(
        path,
        live.url,
        TransferOptions(progress=seen.append, resume_store=ResumeStore(tmp_path / "state")),
        on_start=lambda total, offset: starts.append((total, offset)),
    )
    assert result.sha256 == PatternStream(size, seed=size).sha256()
    assert (result.size, result.verified, result.resumed_from) == (size, True, 0)
    assert result.url.startswith(f"{live.url}/files/")
    assert starts == [(size, 0)]
    assert seen[-1] == size
    assert seen == sorted(seen)
    session = await live.engine.get(result.url.rsplit("/", 1)[1])
    assert (session.sha256, session.name) == (result.sha256, "f.bin")


async def test_engine_publishes_progress_of_ws_uploads(live: LiveWs, tmp_path: Path) -> None:
    path = tmp_path / "p.bin"
    PatternStream(2 * WINDOW).write_to(path)
    with live.engine.events.subscribe() as queue:
        await upload_file_ws(path, live.url)
        kinds = []
        while not queue.empty():
            kinds.append(queue.get_nowait().kind)
    assert kinds[0] is UploadEventKind.CREATED
    assert UploadEventKind.PROGRESS in kinds
    assert kinds[-1] is UploadEventKind.FINISHED


# resuming --------------------------------------------------------------------------------


async def test_resume_after_random_cuts(tmp_path: Path) -> None:
    """A proxy cuts the connection after a random number of bytes, five times over."""
    async with ws_server(tmp_path / "data") as live:
        size = 96 * MiB + 333
        path = PatternStream(size, seed=3).write_to(tmp_path / "cut.bin")
        port = int(live.url.rsplit(":", 1)[1])
        proxy = ChaosProxy(port).start()
        rng = random.Random(20240607)
        cuts_left = [5]
        sent = [0]  # highest position handed to the socket so far in this attempt
        resends: list[tuple[int, int, int]] = []  # (sent before the cut, durable, resumed at)
        durable = [0]

        def arm() -> None:
            if cuts_left[0]:
                cuts_left[0] -= 1
                # At most 16 MiB per attempt: all five cuts land inside the 96 MiB.
                proxy.reset(up=_Rule(cut_after=rng.randint(256 * 1024, 16 * MiB)))
            else:
                proxy.reset()

        def on_retry(notice: RetryNotice) -> None:
            while not events.empty():  # the newest event tells what is durable now
                event = events.get_nowait()
                if event.size == size:
                    durable[0] = event.received
            if resends and resends[-1][2] == -1:
                resends.pop()  # that attempt failed before the server said where to resume
            resends.append((sent[0], durable[0], -1))
            arm()

        def progress(position: int) -> None:
            if resends and resends[-1][2] == -1:
                before, held, _ = resends[-1]
                resends[-1] = (before, held, position)  # the first report is the resume offset
            sent[0] = position

        arm()
        try:
            with live.engine.events.subscribe() as events:
                result = await upload_file_ws(
                    path,
                    proxy.url,
                    TransferOptions(
                        progress=progress,
                        resume_store=ResumeStore(tmp_path / "state"),
                        retry=FAST_RETRIES,
                        on_retry=on_retry,
                    ),
                )
        finally:
            proxy.stop()
        assert result.sha256 == PatternStream(size, seed=3).sha256()
        assert cuts_left == [0] and len(resends) == 5
        for before, held, resumed_at in resends:
            # The server resumes from at least what was durable when the cut was noticed
            # (its abort path then records whatever else reached the disk), so what is sent
            # again was never durable, and never more than one credit.
            assert held <= resumed_at <= before
            assert before - resumed_at <= before - held
            assert before - resumed_at <= CREDIT
        # No byte reached the disk twice.
        assert live.engine.bytes_written_total == size
        print(
            "\n(sent before the cut, durable, resumed at) in MiB:",
            [tuple(round(n / MiB, 2) for n in cut) for cut in resends],
        )


async def test_a_later_call_resumes_from_the_durable_offset(live: LiveWs, tmp_path: Path) -> None:
    size = 40 * MiB
    path = PatternStream(size, seed=9).write_to(tmp_path / "again.bin")
    store = ResumeStore(tmp_path / "state")
    port = int(live.url.rsplit(":", 1)[1])
    proxy = ChaosProxy(port).start()
    try:
        proxy.reset(up=_Rule(cut_after=20 * MiB))
        with pytest.raises(ConnectionFailed):
            await upload_file_ws(
                path, proxy.url, TransferOptions(resume_store=store, retry=RetryPolicy(0))
            )
        proxy.reset()
        key = UploadKey.for_file(path, str(ws_endpoint(proxy.url)))
        kept = await _settled_offset(live, store.get_upload(key))
        result = await upload_file_ws(path, proxy.url, TransferOptions(resume_store=store))
    finally:
        proxy.stop()
    # Bytes the server had not read off its socket when the proxy reset the link are gone
    # with it (more of them on a loaded machine); what it had read is durable and kept.
    assert 8 * MiB <= kept <= 20 * MiB
    assert result.resumed_from == kept
    assert result.sha256 == PatternStream(size, seed=9).sha256()
    assert store.get_upload(key) is None  # forgotten once finished


async def _settled_offset(live: LiveWs, url: str | None) -> int:
    """The upload's offset once the cut connection's writer has recorded what it kept
    (the same for several polls in a row)."""
    assert url is not None, "the first attempt left no upload to resume"
    upload_id = url.rstrip("/").rsplit("/", 1)[1]
    offsets: list[int] = []
    for _ in range(200):
        offsets.append((await live.engine.get(upload_id)).offset)
        if len(offsets) >= 4 and len(set(offsets[-4:])) == 1:
            break
        await asyncio.sleep(0.05)
    return offsets[-1]


def store_key(path: Path, live: LiveWs) -> UploadKey:
    return UploadKey.for_file(path, str(ws_endpoint(live.url)))


async def test_a_dropped_socket_keeps_what_arrived(live: LiveWs) -> None:
    data = PatternStream(8 * MiB + 100, seed=1)
    async with live.connect() as ws:
        await ws.send(op="start", name="drop.bin", size=data.size)
        ready = await ws.reply()
        await ws.stream(ready, frames(data.chunks(0, 3 * MiB + 17), MAX_FRAME))
        await asyncio.sleep(0.2)
        ws.transport().abort()  # no close frame: a pulled cable
    async with live.resume(ready["id"]) as (ws, again):
        assert again["op"] == "ready"
        assert (again["id"], again["size"]) == (ready["id"], data.size)
        assert again["offset"] == 3 * MiB + 17
        await ws.stream(again, frames(data.chunks(again["offset"]), MAX_FRAME))
        await ws.send(op="done", sha256=data.sha256())
        finished = await ws.finished()
    assert finished["sha256"] == data.sha256()


async def test_resuming_a_finished_upload_answers_finished(live: LiveWs) -> None:
    data = PatternStream(1000)
    async with live.connect() as ws:
        first = await ws.upload("twice.bin", data)
    async with live.resume(first["id"]) as (ws, reply):
        assert reply == first
        assert await ws.closed() == 1000


async def test_resuming_a_finished_upload_with_another_sha256_is_refused(live: LiveWs) -> None:
    async with live.connect() as ws:
        first = await ws.upload("twice.bin", PatternStream(1000))
    async with live.connect() as ws:
        await ws.send(op="resume", id=first["id"], sha256="cd" * 32)
        error, close = await ws.error()
    assert (error["code"], close) == ("ERR_CHECKSUM_MISMATCH", 4460)


async def test_start_sha256_survives_a_reconnection(live: LiveWs) -> None:
    data = PatternStream(3 * MiB)
    async with live.connect() as ws:
        await ws.send(op="start", name="s.bin", size=data.size, sha256="00" * 32)
        ready = await ws.reply()
        await ws.stream(ready, frames(data.chunks(0, MiB), MAX_FRAME))
    async with live.resume(ready["id"]) as (ws, again):
        assert again["offset"] == MiB
        await ws.stream(again, frames(data.chunks(again["offset"]), MAX_FRAME))
        await ws.send(op="done")
        error, code = await ws.error()
    assert (error["code"], error["status"], code) == ("ERR_CHECKSUM_MISMATCH", 460, 4460)
    assert error["sha256"] == data.sha256()


# refusals --------------------------------------------------------------------------------


async def opened(live: LiveWs, ws: RawWs, size: int = 10 * MiB, **start: Any) -> dict[str, Any]:
    await ws.send(op="start", name="x.bin", size=size, **start)
    ready = await ws.reply()
    assert ready["op"] == "ready", ready
    return ready


async def test_a_frame_over_the_negotiated_maximum_is_refused(live: LiveWs) -> None:
    async with live.connect() as ws:
        ready = await opened(live, ws, max_frame=4096)
        assert ready["max_frame"] == 4096
        await ws.ws.send_bytes(b"a" * 4096)
        await ws.ws.send_bytes(b"b" * 4097)
        error, code = await ws.error()
    assert (error["code"], error["max_frame"], code) == ("ERR_FRAME_TOO_LARGE", 4096, 1009)
    assert await live.offset(ready["id"]) == 4096  # what came before the bad frame is kept


async def test_a_frame_over_the_server_maximum_is_refused_from_its_header(
    tmp_path: Path,
) -> None:
    settings = WsSettings(max_frame=64 * 1024, window=256 * 1024, credit=512 * 1024)
    async with ws_server(tmp_path / "data", settings) as live, live.connect() as ws:
        ready = await opened(live, ws, max_frame=10 * MiB)
        assert ready["max_frame"] == 64 * 1024  # the server's maximum wins
        # A header claiming 1 GiB: refused before a byte of payload is buffered.
        header = bytes([0x82, 0x80 | 127]) + (1 << 30).to_bytes(8, "big") + b"\0\0\0\0"
        ws.transport().write(header + b"\0" * 1000)
        error, code = await ws.error()
        assert (error["code"], error["status"], code) == ("ERR_FRAME_TOO_LARGE", 400, 1009)
        assert error["max_frame"] == 64 * 1024
        assert await live.offset(ready["id"]) == 0


async def test_data_beyond_the_credit_is_refused(live: LiveWs) -> None:
    async with live.connect() as ws:
        ready = await opened(live, ws, size=100)
        assert ready["credit"] == 100
        await ws.ws.send_bytes(b"x" * 60)
        await ws.ws.send_bytes(b"y" * 41)
        error, code = await ws.error()
    assert (error["code"], error["limit"], code) == ("ERR_CREDIT_EXCEEDED", 100, 4400)
    assert await live.offset(ready["id"]) == 60


BAD_OPENINGS = [
    ("not json", "ERR_INVALID_MESSAGE"),
    ("[]", "ERR_INVALID_MESSAGE"),
    ('{"op": "upload"}', "ERR_INVALID_MESSAGE"),
    ('{"op": "start", "size": 1}', "ERR_INVALID_MESSAGE"),
    ('{"op": "start", "name": "a", "size": -1}', "ERR_INVALID_MESSAGE"),
    ('{"op": "start", "name": "a", "size": "big"}', "ERR_INVALID_MESSAGE"),
    ('{"op": "resume"}', "ERR_INVALID_MESSAGE"),
    ('{"op": "resume", "id": "../etc"}', "ERR_INVALID_MESSAGE"),
    ('{"op": "done"}', "ERR_UNEXPECTED_MESSAGE"),
    ('{"op": "resume", "id": "nosuchupload"}', "ERR_UPLOAD_NOT_FOUND"),
    ('{"op": "start", "name": "a", "size": ' + "9" * 30 + "}", "ERR_INVALID_MESSAGE"),
    ('{"op": "start", "name": "' + "a" * 9000 + '", "size": 1}', "ERR_INVALID_MESSAGE"),
    ("[" * 5000, "ERR_INVALID_MESSAGE"),
]


@pytest.mark.parametrize(("text", "code"), BAD_OPENINGS, ids=range(len(BAD_OPENINGS)))
async def test_bad_openings_get_a_typed_error(live: LiveWs, text: str, code: str) -> None:
    async with live.connect() as ws:
        await ws.ws.send_str(text)
        error, close = await ws.error()
    assert error["code"] == code
    assert close == 4000 + error["status"]
    assert error["status"] < 500


async def test_binary_before_the_opening_is_refused(live: LiveWs) -> None:
    async with live.connect() as ws:
        await ws.ws.send_bytes(b"data")
        error, close = await ws.error()
    assert (error["code"], close) == ("ERR_UNEXPECTED_MESSAGE", 4400)


@pytest.mark.parametrize(
    "message",
    [{"op": "start", "name": "b", "size": 1}, {"op": "resume", "id": "abc"}, {"op": "nope"}],
)
async def test_control_messages_out_of_turn_are_refused(
    live: LiveWs, message: dict[str, Any]
) -> None:
    async with live.connect() as ws:
        ready = await opened(live, ws)
        await ws.ws.send_bytes(b"z" * 1000)
        await ws.send(**message)
        error, close = await ws.error()
    assert error["code"] in ("ERR_UNEXPECTED_MESSAGE", "ERR_INVALID_MESSAGE")
    assert close == 4400
    assert await live.offset(ready["id"]) == 1000


async def test_done_before_every_byte_is_an_incomplete_upload(live: LiveWs) -> None:
    async with live.connect() as ws:
        ready = await opened(live, ws, size=5000)
        await ws.ws.send_bytes(b"q" * 3000)
        await ws.send(op="done")
        error, close = await ws.error()
    assert (error["code"], close, error["missing"]) == (
        "ERR_UPLOAD_INCOMPLETE",
        4409,
        [[3000, 5000]],
    )
    assert await live.offset(ready["id"]) == 3000


async def test_wrong_sha256_is_refused_and_the_upload_not_published(live: LiveWs) -> None:
    data = PatternStream(5000)
    async with live.connect() as ws:
        ready = await opened(live, ws, size=data.size)
        await ws.stream(ready, data.chunks())
        await ws.send(op="done", sha256="ab" * 32)
        error, close = await ws.error()
    assert (error["code"], close, error["sha256"]) == ("ERR_CHECKSUM_MISMATCH", 4460, data.sha256())
    assert not (await live.engine.get(ready["id"])).is_finished


async def test_a_resume_takes_the_upload_over_from_a_silent_connection(live: LiveWs) -> None:
    """The first connection stays open but silent, as a dead link looks to the server."""
    data = PatternStream(3 * 65536, block_size=65536)
    async with live.connect() as first:
        ready = await opened(live, first, size=data.size)
        await first.ws.send_bytes(next(data.chunks(0, 65536)))
        async with live.connect() as second:
            await second.send(op="resume", id=ready["id"])
            resumed = await second.reply(timeout=5)
            assert resumed["op"] == "ready", resumed
            assert 0 <= resumed["offset"] <= 65536
            assert await first.closed() is not None  # the server let the old one go
            await second.stream(resumed, data.chunks(resumed["offset"], data.size))
            await second.send(op="done", sha256=data.sha256())
            finished = await second.reply()
    assert finished["op"] == "finished", finished
    assert finished["sha256"] == data.sha256()


async def test_an_upload_larger_than_the_server_allows_is_refused(tmp_path: Path) -> None:
    async with ws_server(tmp_path / "data", max_size=1000) as live, live.connect() as ws:
        await ws.send(op="start", name="big", size=1001)
        error, close = await ws.error()
    assert (error["code"], error["max_size"], close) == ("ERR_TOO_LARGE", 1000, 4413)


# origins and tokens ---------------------------------------------------------------------


async def handshake_status(live: LiveWs, headers: dict[str, str]) -> int:
    try:
        async with live.http.ws_connect(live.ws_url, headers=headers):
            return 101
    except aiohttp.WSServerHandshakeError as exc:
        return exc.status


async def test_other_origins_are_refused_before_the_upgrade(live: LiveWs) -> None:
    host = live.url.removeprefix("http://")
    assert await handshake_status(live, {"Origin": "http://evil.example"}) == 403
    assert await handshake_status(live, {"Origin": "null"}) == 403
    assert await handshake_status(live, {"Origin": f"http://{host}"}) == 101
    assert await handshake_status(live, {}) == 101  # not a browser
    # Behind a TLS-terminating proxy the page's origin is https.
    forwarded = {"Origin": f"https://{host}", "X-Forwarded-Proto": "https"}
    assert await handshake_status(live, forwarded) == 101


@pytest.fixture
async def guarded(tmp_path: Path) -> AsyncIterator[LiveWs]:
    async with ws_server(tmp_path / "data", token="s3cret") as server:
        yield server


async def test_a_wrong_token_header_is_refused_before_the_upgrade(guarded: LiveWs) -> None:
    assert await handshake_status(guarded, {"Authorization": "Bearer nope"}) == 401


async def test_a_token_header_opens_any_origin(guarded: LiveWs) -> None:
    headers = {"Authorization": "Bearer s3cret", "Origin": "http://elsewhere.example"}
    async with guarded.connect(headers=headers) as ws:
        finished = await ws.upload("t.bin", PatternStream(10))
    assert finished["size"] == 10


@pytest.mark.parametrize(
    ("token", "code"),
    [
        (None, "ERR_UNAUTHORIZED"),
        ("s3cre", "ERR_UNAUTHORIZED"),
        ("s3cret2", "ERR_UNAUTHORIZED"),
        ("", "ERR_INVALID_MESSAGE"),  # an empty string is no token at all
    ],
)
async def test_without_a_header_the_first_message_must_carry_the_token(
    guarded: LiveWs, token: str | None, code: str
) -> None:
    async with guarded.connect() as ws:
        await ws.send(
            op="start", name="n", size=1, **({"token": token} if token is not None else {})
        )
        error, close = await ws.error()
    assert (error["code"], close) == (code, 4000 + error["status"])
    assert not await guarded.engine.list_sessions()  # nothing was created


@pytest.mark.parametrize("origin", [None, "http://elsewhere.example"])
async def test_a_browser_sends_the_token_in_its_first_message(
    guarded: LiveWs, origin: str | None
) -> None:
    headers = {"Origin": origin} if origin else {}
    async with guarded.connect(headers=headers) as ws:
        finished = await ws.upload("b.bin", PatternStream(10), token="s3cret")
    assert finished["size"] == 10


async def test_the_client_library_sends_the_token_header(guarded: LiveWs, tmp_path: Path) -> None:
    path = tmp_path / "c.bin"
    path.write_bytes(b"hello")
    result = await upload_file_ws(path, guarded.url, TransferOptions(token="s3cret"))
    assert result.size == 5
    with pytest.raises(ServerError) as caught:
        await upload_file_ws(path, guarded.url, TransferOptions(token="wrong"))
    assert caught.value.http_status == 401


async def test_the_client_library_reports_a_digest_mismatch(live: LiveWs, tmp_path: Path) -> None:
    """The file changes between the read that sent it and the hash of its prefix."""
    path = tmp_path / "m.bin"
    PatternStream(3 * MiB).write_to(path)
    store = ResumeStore(tmp_path / "state")
    port = int(live.url.rsplit(":", 1)[1])
    proxy = ChaosProxy(port).start()
    try:
        proxy.reset(up=_Rule(cut_after=2 * MiB))
        with pytest.raises(ConnectionFailed):
            await upload_file_ws(
                path, proxy.url, TransferOptions(resume_store=store, retry=RetryPolicy(0))
            )
        proxy.reset()
        with path.open("r+b") as file:  # same size, same mtime: the store cannot tell
            stat = path.stat()
            file.write(b"changed")
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        with pytest.raises(DigestMismatch):
            await upload_file_ws(path, proxy.url, TransferOptions(resume_store=store))
    finally:
        proxy.stop()
    assert store.get_upload(store_key(path, live)) is None  # the next run starts afresh


# memory ----------------------------------------------------------------------------------


@pytest.mark.slow
async def test_server_rss_stays_flat_receiving_2_gib(server_factory: Any, tmp_path: Path) -> None:
    # fsync never: written pages sit in the page cache, which RSS does not count, synced or
    # not; 2 GiB of fsyncs would make this test measure the disk instead of the server.
    server = server_factory(data_dir=tmp_path / "data", args=["--fsync", "never"]).start()
    idle_kib = status_kib(server.pid, "VmHWM")
    data = PatternStream(2048 * MiB, seed=11)
    sampler = RssSampler(server.pid)
    sampler.start()
    started = time.monotonic()
    async with aiohttp.ClientSession() as http, http.ws_connect(f"{server.url}/api/ws") as raw:
        finished = await RawWs(raw).upload("big.bin", data)
    seconds = time.monotonic() - started
    rss_kib = sampler.stop()
    hwm_kib = status_kib(server.pid, "VmHWM")
    assert finished["size"] == data.size
    assert finished["sha256"] == data.sha256()
    print(
        f"\nidle VmHWM {idle_kib} KiB; 2 GiB over WebSocket in {seconds:.1f} s, "
        f"VmRSS max {rss_kib} KiB, VmHWM {hwm_kib} KiB"
    )
    # The kernel updates VmHWM lazily, so a sampled VmRSS can run slightly above it.
    assert max(hwm_kib, rss_kib) < RSS_LIMIT_KIB
