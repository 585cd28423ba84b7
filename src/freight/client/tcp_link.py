"""One connection to a freight TCP server (docs/protocol.md): the ``tcp://`` address, the
HELLO/WELCOME handshake, frames in and out, and which failures are worth another attempt.

:class:`TcpLink` owns the socket and the frame decoder. Control frames are read through a
small buffer; DATA payload can go from a file to the socket with ``sendfile`` and from the
socket straight into a caller's buffer, never through the decoder. Network failures and
silence become :class:`~freight.client.errors.ConnectionFailed`, which callers retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import IO, TypeVar

from yarl import URL

from freight.client.connect import connect_first
from freight.client.errors import ClientError, ConnectionFailed, ProtocolViolation
from freight.client.http import RetryBudget, Timeouts, retrying
from freight.protocol.frames import (
    HEADER_SIZE,
    MAX_TOKEN,
    SERVER_FRAMES,
    ControlFrame,
    DataChunk,
    ErrorFrame,
    Frame,
    FrameDecoder,
    FrameError,
    Hello,
    Welcome,
)

__all__ = [
    "NO_DIGEST",
    "RETRYABLE_CODES",
    "TcpAddress",
    "TcpLink",
    "TcpServerError",
    "parse_tcp_url",
    "with_retries",
]

NO_DIGEST = bytes(32)  # a FILE or DONE frame's SHA-256 when there is none
_CONTROL_BUFFER = 64 * 1024
_DATA_HEADER = HEADER_SIZE + 8  # a DATA frame's header and offset: what precedes its payload
RETRYABLE_CODES = frozenset({"ERR_UPLOAD_LOCKED", "ERR_OFFSET_MISMATCH", "ERR_TIMEOUT"})
T = TypeVar("T")


class TcpServerError(ClientError):
    """The server sent an ERROR frame; ``server_code`` is its stable code."""

    code = "ERR_SERVER"

    def __init__(self, frame: ErrorFrame, action: str) -> None:
        super().__init__(
            f"{action}: {frame.message or frame.code} ({frame.code})",
            server_code=frame.code,
            detail=frame.detail,
        )
        self.server_code = frame.code
        self.detail = frame.detail


@dataclass(frozen=True)
class TcpAddress:
    """``tcp://host:port`` and, for a file, ``/ID``."""

    host: str
    port: int
    file_id: str | None = None

    @property
    def root(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp://{host}:{self.port}"

    def file_url(self, file_id: str) -> str:
        return f"{self.root}/{file_id}"


def parse_tcp_url(text: str) -> TcpAddress:
    """Parse ``tcp://host:port`` or ``tcp://host:port/ID``; the port is required."""
    try:
        url = URL(text.strip())
        port = url.explicit_port
    except ValueError as exc:
        raise ClientError(f"not a valid URL: {text!r}") from exc
    if url.scheme != "tcp" or not url.host or port is None:
        raise ClientError(f"not a tcp://host:port URL: {text!r}")
    segments = [part for part in url.path.split("/") if part]
    if len(segments) > 1:
        raise ClientError(f"a tcp:// URL names at most a file id: {text!r}")
    return TcpAddress(url.host, port, segments[0] if segments else None)


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, TcpServerError):
        return exc.server_code in RETRYABLE_CODES
    return isinstance(exc, ConnectionFailed)


async def with_retries(budget: RetryBudget, attempt: Callable[[], Awaitable[T]]) -> T:
    """Run ``attempt`` until it succeeds, retrying lost connections and the server's
    "try again" codes within ``budget``."""
    return await retrying(budget, attempt, retryable=_retryable)


# one connection -----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _network(action: str, timeout: float) -> AsyncIterator[None]:
    """Network failures and silence become :class:`ConnectionFailed` (retried by callers)."""
    try:
        async with asyncio.timeout(timeout):
            yield
    except TimeoutError as exc:
        raise ConnectionFailed(f"{action}: the server stopped answering (timed out)") from exc
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise ConnectionFailed(f"{action}: {reason}") from exc


class TcpLink:
    """One connection to a freight TCP server, past the HELLO/WELCOME handshake."""

    def __init__(self, sock: socket.socket, timeouts: Timeouts) -> None:
        self.sock = sock
        self.timeouts = timeouts
        self.decoder = FrameDecoder(SERVER_FRAMES)
        self.frames: deque[Frame] = deque()
        self.control_buffer = bytearray(_CONTROL_BUFFER)
        self.welcome = Welcome(1, 1)

    @classmethod
    async def open(cls, address: TcpAddress, token: str | None, timeouts: Timeouts) -> TcpLink:
        raw_token = token.encode() if token is not None else b""
        if len(raw_token) > MAX_TOKEN:
            raise ClientError(f"the token is longer than {MAX_TOKEN} bytes")
        async with _network(f"cannot connect to {address.root}", timeouts.connect):
            sock = await _connect(address.host, address.port)
        link = cls(sock, timeouts)
        try:
            await link.send(Hello(token=raw_token).encode())
            welcome = await link.next_control("connecting")
            if not isinstance(welcome, Welcome):
                raise ProtocolViolation(f"expected WELCOME, got {type(welcome).__name__}")
            link.welcome = welcome
        except BaseException:
            link.close()
            raise
        return link

    def close(self) -> None:
        self.sock.close()

    async def send(self, data: bytes) -> None:
        # Frames are small: one that cannot leave for `stall` seconds means a stalled link.
        async with _network("sending", self.timeouts.stall):
            await asyncio.get_running_loop().sock_sendall(self.sock, data)

    async def send_file(self, file: IO[bytes], offset: int, count: int) -> int:
        """``count`` bytes of ``file`` from ``offset`` with ``sendfile``; fewer only if the
        file ended. Gives up when no byte could leave for ``stall`` seconds (asyncio's own
        ``sock_sendfile`` is the same loop, but a timeout could only bound the whole call,
        which a slow link makes long)."""
        if not hasattr(os, "sendfile"):  # pragma: no cover - Linux and macOS have it
            async with _network("sending", self.timeouts.stall):
                loop = asyncio.get_running_loop()
                return await loop.sock_sendfile(self.sock, file, offset, count)
        sent = 0
        while sent < count:
            try:
                moved = os.sendfile(self.sock.fileno(), file.fileno(), offset + sent, count - sent)
            except (BlockingIOError, InterruptedError):
                await self._writable()
                continue
            except OSError as exc:
                raise ConnectionFailed(f"sending: {exc.strerror or exc}") from exc
            if moved == 0:
                break  # the file ended early
            sent += moved
        return sent

    async def _writable(self) -> None:
        loop = asyncio.get_running_loop()
        ready = loop.create_future()
        fd = self.sock.fileno()
        loop.add_writer(fd, _resolve, ready)
        try:
            async with asyncio.timeout(self.timeouts.stall):
                await ready
        except TimeoutError as exc:
            stall = self.timeouts.stall
            raise ConnectionFailed(f"sending: nothing could be sent for {stall:g} s") from exc
        finally:
            loop.remove_writer(fd)

    async def receive(self, buffer: bytearray, patience: float | None = None) -> list[Frame]:
        """One read into ``buffer``, decoded; DATA in the result points into ``buffer``.
        ``patience``: seconds to wait (the read timeout by default)."""
        async with _network("receiving", patience or self.timeouts.read):
            count = await asyncio.get_running_loop().sock_recv_into(self.sock, buffer)
        return self._decode(buffer, count)

    def read_payload(self, buffer: memoryview) -> int | None:
        """One read that never waits. Within a DATA payload, the payload goes straight into
        ``buffer`` (no copy through the decoder) and its length is returned; between
        payloads, one header is read and decoded into :attr:`frames`, and 0 is returned
        (the read stops where a DATA header ends, so the control buffer never holds
        payload). None: nothing has arrived."""
        decoder = self.decoder
        if decoder.payload_left:
            count = self._read_now(buffer[: min(decoder.payload_left, len(buffer))])
            if count == 0:
                raise ConnectionFailed("the server closed the connection")
            if count is not None:
                decoder.skip_payload(count)
            return count
        held = decoder.buffered
        want = _DATA_HEADER - held if held < _DATA_HEADER else len(self.control_buffer)
        count = self._read_now(memoryview(self.control_buffer)[:want])
        if count is None:
            return None
        self.frames.extend(self._decode(self.control_buffer, count))
        return 0

    async def readable(self, until: float | None) -> bool:
        """Wait until bytes (or the end of the stream) can be read; False if the loop time
        ``until`` came first. Nothing is read here, so giving up early loses nothing (a
        cancelled ``sock_recv_into`` may have read bytes that are then lost)."""
        loop = asyncio.get_running_loop()
        ready = loop.create_future()
        fd = self.sock.fileno()
        loop.add_reader(fd, _resolve, ready)
        try:
            async with asyncio.timeout_at(until) as patience:
                # Called while payload is owed: silence for `stall` seconds is a stall.
                async with _network("receiving", self.timeouts.stall):
                    await ready
        except TimeoutError:
            if patience.expired():
                return False
            raise
        finally:
            loop.remove_reader(fd)
        return True

    def poll(self) -> None:
        """Decode whatever already arrived, without waiting (ACKs, an ERROR)."""
        count = self._read_now(memoryview(self.control_buffer))
        if count is not None:
            self.frames.extend(self._decode(self.control_buffer, count))

    def _read_now(self, view: memoryview) -> int | None:
        try:
            return self.sock.recv_into(view)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as exc:
            raise ConnectionFailed(f"receiving: {exc.strerror or exc}") from exc

    def _decode(self, buffer: bytearray, count: int) -> list[Frame]:
        if count == 0:
            # Mid-frame or not, a closed connection is worth another attempt.
            raise ConnectionFailed("the server closed the connection")
        try:
            return self.decoder.feed(memoryview(buffer)[:count])
        except FrameError as exc:
            raise ProtocolViolation(f"the server broke the protocol: {exc.message}") from exc

    async def next_control(self, action: str, patience: float | None = None) -> ControlFrame:
        """The next frame, which must be a control frame; an ERROR frame is raised.
        ``patience``: seconds to wait for it (the read timeout by default)."""
        while not self.frames:
            self.frames.extend(await self.receive(self.control_buffer, patience))
        frame = self.frames.popleft()
        if isinstance(frame, DataChunk):
            raise ProtocolViolation("the server sent DATA where none was expected")
        if isinstance(frame, ErrorFrame):
            raise TcpServerError(frame, action)
        return frame


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def _connect(host: str, port: int) -> socket.socket:
    sock = await connect_first(host, port)
    # Control frames are tiny and each waits for an answer: never delay them.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock
