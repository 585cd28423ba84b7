"""freight's raw TCP transport: ``freight serve --tcp-port N`` (specified in docs/protocol.md).

Receiving is one :class:`asyncio.BufferedProtocol` per connection. Control frames and DATA
headers are read into a small buffer and decoded by
:class:`~freight.protocol.frames.FrameDecoder`; a DATA payload at the offset the upload
expects is read by the kernel straight into the engine's staging buffer (see
:mod:`freight.server.ingest`), which worker threads write and hash: each byte is copied
once, from the socket to the buffer that goes to disk. Reading pauses while a window is made
durable or the disk is behind, so a slow disk pushes back on the client through TCP itself.

Sending a file (GET) is ``loop.sendfile`` per DATA frame: the payload never enters Python,
and asyncio loops over partial ``os.sendfile`` calls.

A connection's life, in the order of :meth:`_Connection._serve`:

* ``HELLO`` → ``WELCOME`` (or ``ERROR`` and close: bad version, wrong token);
* then requests, one at a time: ``PUT`` or ``RESUME`` → ``ACCEPTED``, ``DATA``… (an ``ACK``
  after each window made durable), ``DONE`` → ``FINISHED``; ``RESUME`` of a finished upload
  → ``FINISHED``; ``GET`` → ``FILE``, ``DATA``….
* An error while both sides agree where the stream stands (answering a request, or DONE)
  is an ``ERROR`` frame and the connection waits for the next request; an error while DATA
  may be in flight is an ``ERROR`` frame and the end of the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, cast

from freight._types import Buffer
from freight.config import ServerConfig
from freight.core import UploadEngine, UploadSession, UploadWriter
from freight.core.pipes import splicing_available
from freight.core.ports import SendfileSource
from freight.errors import (
    ChecksumMismatch,
    ClientDisconnected,
    FreightError,
    OffsetMismatch,
    RangeNotSatisfiable,
    Unauthorized,
    UnsupportedVersion,
    UploadForbidden,
    UploadIncomplete,
    UploadLocked,
    UploadNotFound,
)
from freight.protocol.frames import (
    CLIENT_FRAMES,
    HEADER_SIZE,
    MAX_DATA_PAYLOAD,
    MAX_NAME,
    VERSION,
    Accepted,
    Ack,
    ControlFrame,
    DataChunk,
    Done,
    ErrorFrame,
    FileInfo,
    Finished,
    Frame,
    FrameDecoder,
    FrameError,
    Get,
    Hello,
    IdleTimeout,
    Put,
    Resume,
    UnexpectedFrame,
    Welcome,
    encode_data_header,
)
from freight.server.connections import pending_cap
from freight.server.ingest import WriterFeed
from freight.server.splice import SocketSplice, Splicers, open_splice

__all__ = ["TcpServer", "TcpSettings", "error_frame", "start_tcp_server"]

log = logging.getLogger(__name__)

MiB = 1024 * 1024
NO_DIGEST = bytes(32)
_SMALL_BUFFER = 64 * 1024  # control frames; upload payload goes to the writer's own buffer
_DATA_HEADER_SIZE = HEADER_SIZE + 8  # a DATA frame's header and offset


@dataclass(frozen=True)
class TcpSettings:
    """``window``: bytes between ACKs; a client may send up to two windows past the last one."""

    window: int = 16 * MiB
    max_data: int = MAX_DATA_PAYLOAD
    send_frame: int = 4 * MiB  # DATA payload per frame when serving GET
    idle_timeout: float = 60.0
    lock_wait: float = 5.0  # how long RESUME waits for another connection's writer
    token: str | None = None
    # A connection must complete HELLO within this, and at most ``max_pending`` may be
    # waiting to at once (the longest-waiting one goes first): silent connections cannot
    # use up the descriptors that clients with something to send need.
    handshake_timeout: float = 10.0
    max_pending: int = 256


ByteCounter = Callable[[float], None]


def _ignore(nbytes: float) -> None:
    return None


def error_frame(exc: BaseException) -> ErrorFrame:
    """The one place errors become ERROR frames; ``detail`` carries the useful number."""
    if not isinstance(exc, FreightError):
        return ErrorFrame("ERR_INTERNAL", "internal server error")
    detail = 0
    for key in ("offset", "size", "max_size", "version", "free"):
        value = exc.details.get(key)
        if isinstance(value, int) and value >= 0:
            detail = value
            break
    message = exc.message.encode("utf-8", "replace")[:1024].decode("utf-8", "ignore")
    return ErrorFrame(exc.code, message.replace("\x00", ""), detail)


class _Closed(Exception):
    """The connection is over; nothing more to say on it."""


class _Connection(asyncio.BufferedProtocol):
    """One client connection: the asyncio callbacks feed frames to :meth:`_serve`."""

    def __init__(self, server: TcpServer) -> None:
        self._server = server
        self._engine = server.engine
        self._settings = server.settings
        self._decoder = FrameDecoder(CLIENT_FRAMES, max_data=self._settings.max_data)
        self._buffer = bytearray(_SMALL_BUFFER)
        self._header_buffer = bytearray(_DATA_HEADER_SIZE)
        self._handed_out = self._buffer
        self._frames: deque[Frame] = deque()
        self._failure: FreightError | None = None
        self._wakeup: asyncio.Future[None] | None = None
        self._transport: asyncio.Transport | None = None
        self._in_sync = False  # both sides know where the stream stands
        self._holds: set[str] = set()  # why reading is paused; it resumes when none is left
        self._feed: WriterFeed | None = None  # while an upload streams in
        self._splice: SocketSplice | None = None  # payloads go socket → file, if it can
        self._direct = False  # the last buffer handed out was the writer's own
        self._ack_due = 0  # the writer position at which the next ACK is owed
        self._last_read = 0.0
        self._counted_to = 0  # the writer position up to which received bytes were counted
        self.task: asyncio.Task[None] | None = None

    # asyncio callbacks --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self.task = asyncio.ensure_future(self._serve())
        self._server.track(self)

    def _peer_address(self) -> str | None:
        peer = self._transport.get_extra_info("peername") if self._transport else None
        return str(peer[0]) if isinstance(peer, tuple) and peer else None

    def get_buffer(self, sizehint: int) -> Buffer:
        direct = self._direct_space()
        if direct:
            self._direct = True
            return direct
        self._direct = False
        if self._frames:
            # Queued frames point into the main buffer; reading is paused until they are
            # handled, so this spare is only a safety net.
            self._handed_out = bytearray(_SMALL_BUFFER)
        elif self._feed is not None:
            # Between payloads of an upload read no more than a DATA header, so the payload
            # after it goes straight to the writer.
            self._handed_out = self._header_buffer
        else:
            self._handed_out = self._buffer
        return self._handed_out

    def buffer_updated(self, nbytes: int) -> None:
        self._last_read = asyncio.get_running_loop().time()
        if self._direct:
            self._direct_read(nbytes)
            return
        try:
            self._frames.extend(self._decoder.feed(memoryview(self._handed_out)[:nbytes]))
        except FrameError as exc:
            self._failure = exc
        if self._frames or self._failure is not None:
            self._hold("frames")
            self._wake()
        elif self._splice_ready():
            self._hold("splice")
            self._wake()

    def eof_received(self) -> bool:
        try:
            self._decoder.eof()
        except FrameError as exc:
            self._fail_with(exc)
        self._fail_with(ClientDisconnected("the client closed the connection"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self._splice is not None:
            self._splice.stop()
        self._fail_with(ClientDisconnected("the connection was lost"))

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    # plumbing for the handler -------------------------------------------------------------

    def _fail_with(self, exc: FreightError) -> None:
        if self._failure is None:
            self._failure = exc
        self._wake()

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    def _hold(self, reason: str) -> None:
        self._holds.add(reason)
        assert self._transport is not None
        if self._transport.is_reading():
            self._transport.pause_reading()

    def _release(self, reason: str) -> None:
        self._holds.discard(reason)
        assert self._transport is not None
        if not self._holds and not self._transport.is_reading():
            self._transport.resume_reading()

    def _direct_space(self) -> memoryview | None:
        """The writer's own buffer, when the next bytes are payload it expects next.

        A payload at another offset is decoded as frames instead, for
        :meth:`_stream_into` to refuse.
        """
        feed, decoder = self._feed, self._decoder
        if feed is None or self._splice is not None or self._frames or self._failure is not None:
            return None
        if not decoder.payload_left or decoder.payload_offset != feed.writer.position:
            return None
        return feed.space(decoder.payload_left) or None

    def _direct_read(self, nbytes: int) -> None:
        feed = self._feed
        assert feed is not None
        self._direct = False
        self._decoder.skip_payload(nbytes)
        feed.fed(nbytes)
        if feed.writer.position >= self._ack_due:
            self._hold("window")
            self._wake()

    def _splice_ready(self) -> bool:
        """Whether the payload that comes next can be spliced: it is where the writer is."""
        feed, decoder = self._feed, self._decoder
        if feed is None or self._splice is None or self._frames or self._failure is not None:
            return False
        return bool(decoder.payload_left) and decoder.payload_offset == feed.writer.position

    def _ack_is_due(self) -> bool:
        return self._feed is not None and self._feed.writer.position >= self._ack_due

    async def _next_frame(self) -> Frame:
        frame = await self._next_event(or_ack=False)
        assert frame is not None
        return frame

    async def _next_event(self, *, or_ack: bool) -> Frame | None:
        """The next frame; frames already decoded come before a failure that followed them.

        With ``or_ack``, None as soon as a window of payload read directly needs its ACK.
        """
        while not self._frames:
            if self._failure is not None:
                raise self._failure
            if or_ack and (self._ack_is_due() or self._splice_ready()):
                return None
            self._wakeup = asyncio.get_running_loop().create_future()
            self._release("frames")
            await self._wait_for_wakeup()
        frame = self._frames.popleft()
        if isinstance(frame, ErrorFrame):
            # A client says why it gives up; there is nothing to answer.
            raise ClientDisconnected(f"the client gave up: {frame.code} {frame.message}")
        return frame

    async def _wait_for_wakeup(self) -> None:
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        timeout = self._settings.idle_timeout
        while True:
            try:
                async with asyncio.timeout(timeout):
                    await asyncio.shield(self._wakeup)
                return
            except TimeoutError:
                # Payload read straight into the writer does not wake us; it still counts.
                idle = loop.time() - self._last_read
                if idle >= timeout:
                    raise IdleTimeout("no data for too long; closing the connection") from None
                timeout = self._settings.idle_timeout - idle

    def _send(self, frame: ControlFrame) -> None:
        assert self._transport is not None
        if not self._transport.is_closing():
            self._transport.write(frame.encode())

    # the protocol -------------------------------------------------------------------------

    async def _serve(self) -> None:
        try:
            try:
                async with asyncio.timeout(self._settings.handshake_timeout):
                    await self._handshake()
            except TimeoutError:
                raise _Closed from None
            finally:
                self._server.handshake_over(self)
            while True:
                await self._serve_request()
        except _Closed:
            pass
        except FreightError as exc:
            if not isinstance(exc, ClientDisconnected):
                self._send(error_frame(exc))
            log.debug("tcp connection ends: %s", exc)
        except Exception as exc:
            log.exception("tcp connection failed")
            self._send(error_frame(exc))
        finally:
            assert self._transport is not None
            self._transport.close()
            self._server.forget(self)

    async def _handshake(self) -> None:
        hello = await self._next_frame()
        if not isinstance(hello, Hello):
            raise UnexpectedFrame("the first frame must be HELLO")
        if hello.version != VERSION:
            raise UnsupportedVersion(
                f"protocol version {hello.version} is not supported; this server speaks {VERSION}",
                version=VERSION,
            )
        token = self._settings.token
        if token is not None and not hmac.compare_digest(hello.token, token.encode()):
            raise Unauthorized("missing or wrong token")
        self._send(Welcome(self._settings.window, self._settings.max_data))
        self._in_sync = True

    async def _serve_request(self) -> None:
        try:
            request = await self._next_frame()
        except ClientDisconnected:
            raise _Closed from None  # a client leaving between requests is the normal end
        try:
            if isinstance(request, Put):
                await self._put(request)
            elif isinstance(request, Resume):
                await self._resume(request)
            elif isinstance(request, Get):
                await self._get(request)
            else:
                raise UnexpectedFrame(f"{type(request).__name__} is not a request")
        except FreightError as exc:
            if not self._in_sync:
                raise
            self._send(error_frame(exc))

    # uploads ------------------------------------------------------------------------------

    async def _put(self, put: Put) -> None:
        session = await self._engine.create(
            length=put.size,
            metadata={"filename": put.name or None},
            client=self._peer_address(),
            # Kept for a later RESUME, and checked if the upload is finished without one.
            declared_sha256=put.sha256.hex() if put.sha256 is not None else None,
        )
        await self._receive(session, put.sha256)

    async def _resume(self, resume: Resume) -> None:
        session = await self._engine.get(resume.upload_id)
        if session.is_finished:
            self._send(_finished(session))
            return
        if session.length is None:
            raise UploadForbidden("this upload has no declared length; it cannot be resumed here")
        await self._receive(session, _declared_sha256(session))

    async def _receive(self, session: UploadSession, declared: bytes | None) -> None:
        size = session.length or 0
        async with contextlib.AsyncExitStack() as stack:
            writer = await self._claim_writer(stack, session.id)
            self._send(Accepted(session.id, writer.start, size))
            self._in_sync = False
            done = await self._stream_into(writer)
            self._in_sync = True
            await writer.commit(expected_end=size)
        # 32 zero bytes: the client did not hash (a device too small to); it trusts ours.
        claimed = done.sha256 if done.sha256 != NO_DIGEST else None
        if declared is not None and claimed is not None and declared != claimed:
            raise ChecksumMismatch("DONE's SHA-256 differs from the one PUT declared")
        expected = claimed or declared
        finished = await self._engine.finish(
            session.id, expected_sha256=expected.hex() if expected is not None else None
        )
        self._send(_finished(finished))

    async def _claim_writer(self, stack: contextlib.AsyncExitStack, upload_id: str) -> UploadWriter:
        """A writer at the durable offset, taking the upload over from an older connection.

        A client that lost its connection reconnects at once, long before the server
        notices the old connection is dead: the old one is closed (keeping what it made
        durable) and this one goes on from wherever that leaves the upload. Work that cannot
        be interrupted (finishing) is waited for, a little.
        """
        deadline = asyncio.get_running_loop().time() + self._settings.lock_wait
        while True:
            try:
                writer = self._engine.writer(upload_id, None, interrupt=self.abort)
                return await stack.enter_async_context(writer)
            except UploadLocked:
                if asyncio.get_running_loop().time() >= deadline:
                    raise
            await asyncio.sleep(0.05)

    async def _stream_into(self, writer: UploadWriter) -> Done:
        """Write DATA until DONE, acknowledging each window once it is durable.

        Payload at the writer's position is read straight into the writer's buffer (see
        :meth:`_direct_space`); anything else arrives here as frames. No credit check is
        needed: reading stops while a window is made durable, so the client can never get
        more than a window and a receive buffer past the last ACK.
        """
        feed = WriterFeed(
            writer,
            hold=lambda: self._hold("room"),
            release=lambda: self._release("room"),
            fail=self._fail_on_write,
        )
        self._feed, self._ack_due = feed, writer.start + self._settings.window
        self._counted_to = writer.position
        self._splice = open_splice(
            self._server.splicers,
            writer,
            self._transport,
            self._counted,
            idle_timeout=self._settings.idle_timeout,
        )
        try:
            while True:
                frame = await self._next_event(or_ack=True)
                if frame is None or type(frame) is DataChunk:
                    if frame is not None:
                        await self._write_frame(writer, frame)
                    elif self._splice_ready():
                        await self._splice_payload()
                    if self._ack_is_due():
                        await self._acknowledge(feed)
                elif isinstance(frame, Done):
                    await feed.settle()
                    return frame
                else:
                    raise UnexpectedFrame(f"{type(frame).__name__} during an upload")
        finally:
            self._count_received(writer)
            self._feed = None
            feed.cancel()
            if self._splice is not None:
                self._splice.close()
                self._splice = None
            self._holds.discard("room")
            self._holds.discard("window")
            self._holds.discard("splice")

    async def _splice_payload(self) -> None:
        """Move the payload that comes next from the socket to the file, off the event loop."""
        assert self._splice is not None
        length = self._decoder.payload_left
        try:
            moved = await self._splice.move(length)
        except TimeoutError:
            raise IdleTimeout("no data for too long; closing the connection") from None
        self._decoder.skip_payload(moved)
        if moved < length:
            raise ClientDisconnected("the connection ended inside a DATA payload")
        self._release("splice")

    def _counted(self, nbytes: int) -> None:
        self._last_read = asyncio.get_running_loop().time()

    def _fail_on_write(self, exc: BaseException) -> None:
        self._fail_with(exc if isinstance(exc, FreightError) else FreightError(str(exc)))

    async def _write_frame(self, writer: UploadWriter, frame: DataChunk) -> None:
        if frame.offset != writer.position:
            raise OffsetMismatch(
                f"DATA at {frame.offset}, expected {writer.position}",
                offset=self._ack_due - self._settings.window,
            )
        await writer.write(frame.data)

    def _count_received(self, writer: UploadWriter) -> None:
        """Metrics, a window at a time: counting every payload would cost on the hot path."""
        self._server.on_received(max(0, writer.position - self._counted_to))
        self._counted_to = max(self._counted_to, writer.position)

    async def _acknowledge(self, feed: WriterFeed) -> None:
        await feed.settle()
        acked = await feed.writer.checkpoint()
        self._send(Ack(acked))
        self._count_received(feed.writer)
        self._ack_due = feed.writer.position + self._settings.window
        self._release("window")

    # downloads ----------------------------------------------------------------------------

    async def _get(self, get: Get) -> None:
        session = await self._engine.get(get.upload_id)
        if not session.is_finished:
            raise UploadIncomplete("the upload is not finished yet")
        size = session.length or 0
        if get.offset > size:
            raise RangeNotSatisfiable(f"offset {get.offset} is past the end ({size})", size=size)
        available = size - get.offset
        length = available if get.length is None else min(get.length, available)
        store = self._engine.store
        if not isinstance(store, SendfileSource):
            raise FreightError("this storage backend cannot serve raw TCP downloads")
        try:
            file = open(store.file_path(session.id), "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError as exc:
            raise UploadNotFound("the file was deleted") from exc
        with file:
            info = FileInfo(size, get.offset, length, _digest(session), _name(session))
            self._send(info)
            self._in_sync = False
            await self._send_range(file, get.offset, length)
            self._in_sync = True

    async def _send_range(self, file: IO[bytes], offset: int, length: int) -> None:
        assert self._transport is not None
        loop = asyncio.get_running_loop()
        position, end = offset, offset + length
        while position < end:
            count = min(self._settings.send_frame, end - position)
            self._transport.write(encode_data_header(position, count))
            try:
                # A client that stops reading must not hold the connection forever.
                async with asyncio.timeout(self._settings.idle_timeout):
                    sent = await loop.sendfile(self._transport, file, position, count)
            except TimeoutError:
                raise IdleTimeout("the client stopped reading the download") from None
            except (ConnectionError, RuntimeError) as exc:
                raise ClientDisconnected("the client went away during a download") from exc
            self._server.on_sent(sent)
            if sent != count:
                raise FreightError("the stored file is shorter than its recorded size")
            position += count


def _finished(session: UploadSession) -> Finished:
    return Finished(session.id, session.length or 0, _digest(session))


def _digest(session: UploadSession) -> bytes:
    """The file's SHA-256; all zeros when the server keeps none (``--no-sha256``)."""
    return bytes.fromhex(session.sha256) if session.sha256 is not None else NO_DIGEST


def _name(session: UploadSession) -> str:
    """The stored name, cut to what a FILE frame carries (it is only a suggestion)."""
    raw = (session.name or "").replace("\x00", "").encode("utf-8", "replace")[:MAX_NAME]
    return raw.decode("utf-8", "ignore")


def _declared_sha256(session: UploadSession) -> bytes | None:
    value = session.declared_sha256
    if value is None:
        return None
    with contextlib.suppress(ValueError):
        digest = bytes.fromhex(value)
        if len(digest) == 32:
            return digest
    return None


class TcpServer:
    """Listens for freight TCP connections and serves them with ``engine``."""

    def __init__(
        self,
        engine: UploadEngine,
        settings: TcpSettings | None = None,
        *,
        on_received: ByteCounter = _ignore,
        on_sent: ByteCounter = _ignore,
    ) -> None:
        self.engine = engine
        self.settings = settings or TcpSettings()
        self.on_received = on_received  # upload bytes, counted a window at a time
        self.on_sent = on_sent  # download bytes
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._pending: dict[_Connection, None] = {}  # no HELLO yet, oldest first
        self.splicers = Splicers() if splicing_available() else None
        self.address: tuple[str, int] = ("", 0)

    async def start(self, host: str, port: int) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self), host, port, reuse_address=True
        )
        sockname = self._server.sockets[0].getsockname()
        self.address = (str(sockname[0]), int(sockname[1]))
        return self.address

    def track(self, connection: _Connection) -> None:
        self._connections.add(connection)
        self._pending[connection] = None
        while len(self._pending) > self.settings.max_pending:
            oldest = next(iter(self._pending))
            del self._pending[oldest]
            oldest.abort()

    def handshake_over(self, connection: _Connection) -> None:
        self._pending.pop(connection, None)

    def forget(self, connection: _Connection) -> None:
        self._connections.discard(connection)
        self._pending.pop(connection, None)

    def stop_listening(self) -> None:
        """Accept no more connections; those open go on."""
        if self._server is not None:
            self._server.close()

    async def close(self, timeout: float | None = None) -> None:
        """Stop listening, end every connection and wait (up to ``timeout``) until their
        writers let go: an upload keeps what reached its file, as after a dropped link."""
        self.stop_listening()
        connections = list(self._connections)
        for connection in connections:
            connection.abort()
        tasks = [c.task for c in connections if c.task is not None]
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=timeout)
            for task in late:
                task.cancel()
            if late:
                log.warning("tcp: %d connections did not end in time; cancelled", len(late))
                await asyncio.wait(late)
        if self._server is not None:
            await self._server.wait_closed()
        if self.splicers is not None:
            self.splicers.shutdown()


async def start_tcp_server(
    engine: UploadEngine,
    config: ServerConfig,
    *,
    on_received: ByteCounter = _ignore,
    on_sent: ByteCounter = _ignore,
) -> TcpServer:
    """Start the TCP listener ``config`` asks for, sharing the HTTP app's engine."""
    assert config.tcp_port is not None
    settings = TcpSettings(
        token=config.token,
        idle_timeout=config.idle_timeout,
        handshake_timeout=config.header_timeout,
        max_pending=pending_cap(config.max_pending),
    )
    server = TcpServer(engine, settings, on_received=on_received, on_sent=on_sent)
    await server.start(config.host, config.tcp_port)
    return server
