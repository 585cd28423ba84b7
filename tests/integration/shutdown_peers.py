"""Rate-limited uploaders that stay mid-flight while a server shuts down, one per protocol.

Each runs in a thread, sends :class:`PatternStream` bytes at a set rate, records how far it
got (``sent``) and the last offset the server acknowledged as durable (``acked``), and
stops by itself when the connection ends. :func:`finish_tus`, :func:`finish_ws` and
:func:`finish_tcp` then resume the upload on a restarted server, from the offset that server
reports, and return that offset and the stored file's SHA-256.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from freight.protocol.frames import (
    SERVER_FRAMES,
    Accepted,
    Ack,
    Done,
    FrameDecoder,
    Hello,
    Put,
    Resume,
    encode_data,
)
from freight.protocol.frames import Finished as TcpFinished

from .helpers import MiB, PatternStream, head_offset, request

__all__ = ["TcpPeer", "TusPeer", "WsPeer", "finish_tcp", "finish_tus", "finish_ws"]

PIECE = 256 * 1024


def paced(data: PatternStream, start: int, rate: float, piece: int = PIECE) -> Iterator[bytes]:
    """The bytes of ``data`` from ``start`` in pieces, at about ``rate`` bytes a second."""
    began, position = time.monotonic(), start
    while position < data.size:
        chunk = b"".join(data.chunks(position, min(position + piece, data.size)))
        yield chunk
        position += len(chunk)
        ahead = (position - start) / rate - (time.monotonic() - began)
        if ahead > 0:
            time.sleep(ahead)


class _Peer:
    def __init__(self, data: PatternStream, rate: float) -> None:
        self.data = data
        self.rate = rate
        self.sent = 0
        self.acked = 0
        self.ended = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._guarded, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _guarded(self) -> None:
        try:
            self.run()
        except OSError as exc:
            self.error = exc
        finally:
            self.ended.set()

    def run(self) -> None:
        raise NotImplementedError

    def wait_sent(self, at_least: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self.sent < at_least:
            assert not self.ended.is_set(), f"the upload ended early: {self.error!r}"
            assert time.monotonic() < deadline, "the upload did not get that far in time"
            time.sleep(0.02)


class TusPeer(_Peer):
    """One tus PATCH of the whole file on a raw socket; tus acknowledges nothing mid-body."""

    def __init__(self, url: str, data: PatternStream, rate: float) -> None:
        super().__init__(data, rate)
        self.url = url

    def run(self) -> None:
        parts = urlsplit(self.url)
        head = (
            f"PATCH {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nTus-Resumable: 1.0.0\r\n"
            "Content-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\n"
            f"Content-Length: {self.data.size}\r\n\r\n"
        )
        with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
            sock.sendall(head.encode())
            for chunk in paced(self.data, 0, self.rate):
                sock.sendall(chunk)
                self.sent += len(chunk)


def finish_tus(url: str, data: PatternStream) -> int:
    """PATCH the rest of the upload at ``url``; returns the offset the server had kept."""
    kept = head_offset(url)
    body = b"".join(data.chunks(kept))
    headers = {
        "Tus-Resumable": "1.0.0",
        "Content-Type": "application/offset+octet-stream",
        "Upload-Offset": str(kept),
    }
    reply = request("PATCH", url, headers, body)
    assert reply.status == 204, reply
    return kept


class WsPeer(_Peer):
    """A WebSocket upload (``start``), sending binary frames as far as the credit allows."""

    def __init__(self, base_url: str, data: PatternStream, rate: float) -> None:
        super().__init__(data, rate)
        self.base_url = base_url
        self.upload_id: str | None = None
        self.close_code: int | None = None
        self.close_reason = ""
        self.acked_limit = 0

    def run(self) -> None:
        asyncio.run(self._run())

    async def _run(self) -> None:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(f"{self.base_url}/api/ws", autoclose=False) as ws,
        ):
            start = {"op": "start", "name": "w.bin", "size": self.data.size}
            await ws.send_str(json.dumps({**start, "sha256": self.data.sha256()}))
            ready = json.loads((await ws.receive()).data)
            assert ready["op"] == "ready", ready
            self.upload_id = ready["id"]
            limit = ready["offset"] + ready["credit"]
            credits = asyncio.ensure_future(self._read(ws))
            began = time.monotonic()
            try:
                for chunk in _pieces(self.data, 0):
                    while self.sent + len(chunk) > max(limit, self.acked_limit):
                        if credits.done():
                            return
                        await asyncio.sleep(0.01)
                    if credits.done() or ws.closed:
                        return
                    await ws.send_bytes(chunk)
                    self.sent += len(chunk)
                    ahead = self.sent / self.rate - (time.monotonic() - began)
                    await asyncio.sleep(max(0.0, ahead))
            finally:
                await credits

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        while True:
            message = await ws.receive()  # not ``async for``: it hides the close frame
            if message.type is aiohttp.WSMsgType.TEXT:
                reply = json.loads(message.data)
                if reply["op"] == "credit":
                    self.acked = reply["offset"]
                    self.acked_limit = reply["offset"] + reply["credit"]
                continue
            if message.type is aiohttp.WSMsgType.CLOSE:
                self.close_reason = str(message.extra or "")
                await ws.close()
            self.close_code = ws.close_code
            return


def _pieces(data: PatternStream, start: int) -> Iterator[bytes]:
    """The bytes from ``start`` in WebSocket frames the server accepts (256 KiB at most)."""
    for position in range(start, data.size, PIECE):
        yield b"".join(data.chunks(position, min(position + PIECE, data.size)))


async def _finish_ws(base_url: str, upload_id: str, data: PatternStream) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"{base_url}/api/ws") as ws,
    ):
        await ws.send_str(json.dumps({"op": "resume", "id": upload_id}))
        ready = json.loads((await ws.receive()).data)
        assert ready["op"] == "ready", ready
        kept = int(ready["offset"])
        for chunk in _pieces(data, kept):
            await ws.send_bytes(chunk)  # the credit covers it: a 48 MiB file, 32 MiB ahead
        await ws.send_str(json.dumps({"op": "done", "sha256": data.sha256()}))
        while True:
            reply = json.loads((await ws.receive()).data)
            if reply["op"] != "credit":
                break
        assert reply["op"] == "finished", reply
        return kept, str(reply["sha256"])


def finish_ws(base_url: str, upload_id: str, data: PatternStream) -> tuple[int, str]:
    """Resume a WebSocket upload; returns the server's offset and the finished SHA-256."""
    return asyncio.run(_finish_ws(base_url, upload_id, data))


class TcpPeer(_Peer):
    """A raw TCP ``PUT`` (docs/protocol.md), reading ACKs beside the DATA it sends."""

    def __init__(self, host: str, port: int, data: PatternStream, rate: float) -> None:
        super().__init__(data, rate)
        self.address = (host, port)
        self.upload_id: str | None = None

    def run(self) -> None:
        with socket.create_connection(self.address, timeout=30) as sock:
            decoder = FrameDecoder(SERVER_FRAMES)
            sock.sendall(Hello().encode())
            sock.sendall(Put(self.data.size, "t.bin", bytes.fromhex(self.data.sha256())).encode())
            accepted = _next_control(sock, decoder, Accepted)
            self.upload_id = accepted.upload_id
            reader = threading.Thread(target=self._read_acks, args=(sock, decoder), daemon=True)
            reader.start()
            for chunk in paced(self.data, 0, self.rate):
                sock.sendall(encode_data(self.sent, chunk))
                self.sent += len(chunk)
            reader.join(30)

    def _read_acks(self, sock: socket.socket, decoder: FrameDecoder) -> None:
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    return
                for frame in decoder.feed(data):
                    if isinstance(frame, Ack):
                        self.acked = frame.offset
        except OSError:
            return


def _next_control(sock: socket.socket, decoder: FrameDecoder, kind: type[Any]) -> Any:
    while True:
        data = sock.recv(65536)
        assert data, "the server closed the connection"
        for frame in decoder.feed(data):
            if isinstance(frame, kind):
                return frame
            assert not hasattr(frame, "code"), f"server error: {frame}"


def finish_tcp(host: str, port: int, upload_id: str, data: PatternStream) -> tuple[int, str]:
    """RESUME a TCP upload; returns the server's offset and the finished SHA-256."""
    with socket.create_connection((host, port), timeout=60) as sock:
        decoder = FrameDecoder(SERVER_FRAMES)
        sock.sendall(Hello().encode())
        sock.sendall(Resume(upload_id).encode())
        accepted = _next_control(sock, decoder, Accepted)
        position = accepted.offset
        for chunk in data.chunks(accepted.offset):
            for start in range(0, len(chunk), 4 * MiB):
                piece = chunk[start : start + 4 * MiB]
                sock.sendall(encode_data(position, piece))
                position += len(piece)
        sock.sendall(Done(bytes.fromhex(data.sha256())).encode())
        finished = _next_control(sock, decoder, TcpFinished)
        return int(accepted.offset), finished.sha256.hex()
