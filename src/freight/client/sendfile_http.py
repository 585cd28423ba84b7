"""One HTTP/1.1 request whose body is a byte range of a local file, sent with ``sendfile``.

aiohttp's client writes a body through Python: each byte is read into a ``bytes`` object,
then copied into the socket. Over plain TCP (not TLS) the kernel can move the file's pages
to the socket itself, and the client's CPU per GiB drops to what hashing the file costs.
This module does only that: it opens its own connection (``Connection: close``, so no pool
state is shared with the session), writes the request head, ``sendfile``-s the range without
blocking the event loop, and reads the answer with a small parser. The session still does
every other request; its default headers (user agent, token) and timeouts are reused here.

Failures are raised as the aiohttp errors the callers already retry (a lost connection, a
timeout), so the retry and resume logic is the same whichever way a body went. A server
that answers before the body is over (it refuses the request) is heard: while the socket
cannot take more, the client also watches for an answer, and stops sending when one comes.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from freight.client.connect import connect_first
from freight.client.errors import LocalFileChanged, ProtocolViolation, ServerError
from freight.client.http import parse_error_body
from freight.client.rate import pace

__all__ = [
    "KeptConnections",
    "RawResponse",
    "can_sendfile",
    "raw_server_error",
    "send_file_request",
]

_MAX_HEAD = 64 * 1024  # a response head larger than this is not a freight server's
_MAX_BODY = 64 * 1024  # bodies are read for error messages and small JSON answers only
# Bytes per sendfile call: the unit of progress reports (as the other bodies' pieces).
_PIECE = 1024 * 1024
_RECV_SIZE = 64 * 1024


@dataclass(frozen=True)
class RawResponse:
    """The final answer to a :func:`send_file_request` (its body capped at 64 KiB)."""

    status: int
    reason: str
    headers: CIMultiDictProxy[str]
    body: bytes

    def json_object(self) -> dict[str, Any]:
        """The body as a JSON object (what freight's API answers)."""
        try:
            data = json.loads(self.body)
        except ValueError as exc:
            raise ProtocolViolation(f"the server answered HTTP {self.status} without JSON") from exc
        if not isinstance(data, dict):
            raise ProtocolViolation("the server's answer is not a JSON object")
        return data


def can_sendfile(url: URL) -> bool:
    """Whether a body for ``url`` can go with ``sendfile``: plain http only (TLS encrypts
    in user space), on a system that has it."""
    return url.scheme == "http" and hasattr(os, "sendfile") and url.raw_host is not None


def raw_server_error(resp: RawResponse, action: str) -> ServerError:
    """The error for an unexpected status, as :func:`freight.client.http.server_error`."""
    message, code = parse_error_body(resp.body)
    message = " ".join((message or resp.reason or "error").split())
    return ServerError(
        f"{action}: {message} (HTTP {resp.status})", http_status=resp.status, server_code=code
    )


async def send_file_request(
    session: aiohttp.ClientSession,
    method: str,
    url: URL,
    headers: Mapping[str, str],
    path: Path,
    start: int,
    end: int,
    *,
    on_sent: Callable[[int], None] | None = None,
    keep_up: Callable[[int], Awaitable[None]] | None = None,
    stall_timeout: float,
    expect100: bool = False,
    connections: KeptConnections | None = None,
) -> RawResponse:
    """Send ``method url`` with bytes ``[start, end)`` of ``path`` as the body; the answer.

    ``headers`` are the request's own (with ``Content-Length``), sent after the session's
    defaults. ``on_sent`` gets the file position after each move of bytes into the socket,
    and ``keep_up`` is awaited with it (a hash that follows the send paces it there).
    ``stall_timeout`` bounds each wait for the socket to take more. With ``expect100`` the
    body waits for ``100 Continue``; any other answer is returned without sending it.
    With ``connections`` the connection is kept for the next request when it can be.
    """
    timeout = session.timeout
    read_timeout = timeout.sock_read or timeout.total or 300.0
    key = (url.raw_host or "", url.port or 80)
    sock = connections.take(key) if connections is not None else None
    if sock is None:
        sock = await _connect(url, timeout.sock_connect or timeout.connect or 60.0)
    exchange = _Exchange(sock, read_timeout, stall_timeout)
    try:
        fields = {**session.headers, **headers, "Host": _host(url)}
        if connections is None:
            fields["Connection"] = "close"
        if expect100:
            fields["Expect"] = "100-continue"
        await exchange.send_head(method, url, fields)
        if expect100:
            answer = await exchange.response(informational=True)
            if answer.status != 100:
                return answer  # the server still waits for a body: the connection is spent
        with path.open("rb") as file:
            complete = await exchange.send_body(file.fileno(), (start, end), on_sent, keep_up)
        answer = await exchange.response()
        if connections is not None and complete and exchange.reusable(answer):
            connections.give(key, sock)
            sock = None
        return answer
    finally:
        if sock is not None:
            sock.close()


class KeptConnections:
    """Idle keep-alive connections of one client, reused by :func:`send_file_request` (a
    chunk upload makes one request per chunk); :meth:`close` closes them."""

    def __init__(self, most: int = 32) -> None:
        self._most = most
        self._idle: dict[tuple[str, int], list[socket.socket]] = {}

    def take(self, key: tuple[str, int]) -> socket.socket | None:
        idle = self._idle.get(key, [])
        while idle:
            sock = idle.pop()
            if _still_open(sock):
                return sock
            sock.close()
        return None

    def give(self, key: tuple[str, int], sock: socket.socket) -> None:
        idle = self._idle.setdefault(key, [])
        if len(idle) < self._most:
            idle.append(sock)
        else:
            sock.close()

    def close(self) -> None:
        for idle in self._idle.values():
            for sock in idle:
                sock.close()
        self._idle.clear()


def _still_open(sock: socket.socket) -> bool:
    """An idle connection with nothing to read: the server has not closed it (or sent
    anything it should not have)."""
    try:
        sock.recv(1, socket.MSG_PEEK)
    except (BlockingIOError, InterruptedError):
        return True
    except OSError:
        return False
    return False


def _host(url: URL) -> str:
    host = url.raw_host or ""
    if ":" in host:
        host = f"[{host}]"
    return host if url.explicit_port is None else f"{host}:{url.explicit_port}"


async def _connect(url: URL, timeout: float) -> socket.socket:
    host, port = url.raw_host or "", url.port or 80
    try:
        async with asyncio.timeout(timeout):
            return await connect_first(host, port)
    except OSError as failure:
        raise aiohttp.ClientOSError(
            failure.errno, f"cannot connect to {host}:{port}: {failure}"
        ) from failure


class _Exchange:
    """The socket of one request, and what was read of its answer."""

    def __init__(self, sock: socket.socket, read_timeout: float, stall_timeout: float) -> None:
        self.sock = sock
        self.read_timeout = read_timeout
        self.stall_timeout = stall_timeout
        self.received = bytearray()
        self.ended = False  # the server closed its side

    async def send_head(self, method: str, url: URL, fields: Mapping[str, str]) -> None:
        lines = [f"{method} {url.raw_path_qs or '/'} HTTP/1.1"]
        lines += [f"{name}: {value}" for name, value in fields.items()]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.stall_timeout):
                await loop.sock_sendall(self.sock, head)
        except OSError as exc:
            raise aiohttp.ClientOSError(exc.errno, f"sending the request: {exc}") from exc

    async def send_body(
        self,
        fd: int,
        span: tuple[int, int],
        on_sent: Callable[[int], None] | None,
        keep_up: Callable[[int], Awaitable[None]] | None,
    ) -> bool:
        """``sendfile`` the range; False if it stopped early because the server answered or
        hung up first (the caller then reads that answer, or learns the link was lost)."""
        position, end = span
        out = self.sock.fileno()
        while position < end:
            try:
                moved = os.sendfile(out, fd, position, min(end - position, _PIECE))
            except (BlockingIOError, InterruptedError):
                if await self._writable_or_answered():
                    return False
                continue
            except (BrokenPipeError, ConnectionResetError):
                return False  # an answer may have come before the hang-up: the caller reads it
            except OSError as exc:
                raise aiohttp.ClientOSError(exc.errno, f"sending the body: {exc}") from exc
            if moved == 0:
                raise LocalFileChanged(f"the file became shorter while it was sent ({position})")
            position += moved
            if on_sent is not None:
                on_sent(position)
            if keep_up is not None:
                await keep_up(position)
            await pace(moved)  # --limit-rate: paid after the fact, so a retried call pays once
        return True

    async def _writable_or_answered(self) -> bool:
        """Wait until the socket takes more (False) or the server says something (True)."""
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[bool] = loop.create_future()
        fd = self.sock.fileno()
        loop.add_writer(fd, _resolve, ready, False)
        loop.add_reader(fd, _resolve, ready, True)
        try:
            async with asyncio.timeout(self.stall_timeout):
                return await ready
        finally:
            loop.remove_writer(fd)
            loop.remove_reader(fd)

    def reusable(self, answer: RawResponse) -> bool:
        """Whether the connection can carry another request after ``answer``: its body was
        read exactly, nothing else arrived and the server did not say it closes."""
        length = answer.headers.get("Content-Length", "")
        return (
            not self.ended
            and length.isdigit()
            and int(length) == len(answer.body)
            and not self.received
            and answer.headers.get("Connection", "").lower() != "close"
        )

    async def response(self, *, informational: bool = False) -> RawResponse:
        """The next answer; ``100 Continue`` is skipped unless ``informational``."""
        while True:
            head_end = await self._read_until_head()
            status, reason, headers = _parse_head(bytes(self.received[:head_end]))
            del self.received[: head_end + 4]
            if 100 <= status < 200:
                if informational and status == 100:
                    return RawResponse(status, reason, headers, b"")
                continue
            return RawResponse(status, reason, headers, await self._read_body(headers))

    async def _read_until_head(self) -> int:
        while (found := self.received.find(b"\r\n\r\n")) < 0:
            if len(self.received) > _MAX_HEAD:
                raise ProtocolViolation("the server's response head is too large")
            if not await self._receive():
                raise aiohttp.ServerDisconnectedError()
        return found

    async def _read_body(self, headers: CIMultiDictProxy[str]) -> bytes:
        length = headers.get("Content-Length")
        want = _MAX_BODY
        if length is not None and length.isdigit():
            want = min(int(length), _MAX_BODY)
        elif headers.get("Transfer-Encoding"):
            want = 0  # chunked bodies (none of freight's answers) are not worth parsing here
        while len(self.received) < want and await self._receive():
            pass
        if length is not None and length.isdigit() and len(self.received) < want:
            raise aiohttp.ClientPayloadError("the response body was cut short")
        body = bytes(self.received[:want])
        del self.received[:want]
        return body

    async def _receive(self) -> bool:
        """Read what arrived into :attr:`received`; False at the end of the stream."""
        if self.ended:
            return False
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.read_timeout):
                data = await loop.sock_recv(self.sock, _RECV_SIZE)
        except ConnectionResetError:
            data = b""
        except OSError as exc:
            raise aiohttp.ClientOSError(exc.errno, f"reading the answer: {exc}") from exc
        if not data:
            self.ended = True
            return False
        self.received += data
        return True


def _resolve(future: asyncio.Future[bool], value: bool) -> None:
    if not future.done():
        future.set_result(value)


def _parse_head(head: bytes) -> tuple[int, str, CIMultiDictProxy[str]]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise ProtocolViolation(f"not an HTTP/1.1 status line: {lines[0][:80]!r}")
    headers: CIMultiDict[str] = CIMultiDict()
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers.add(name.strip(), value.strip())
    return int(parts[1]), parts[2] if len(parts) > 2 else "", CIMultiDictProxy(headers)
