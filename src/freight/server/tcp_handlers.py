"""The raw TCP transport's requests: HELLO, then PUT, RESUME and GET, one at a time.

:class:`TcpConnection` runs a connection's life (see :mod:`freight.server.tcp`) on top of
the asyncio plumbing of :class:`~freight.server.tcp_connection.ConnectionPlumbing`: uploads
stream DATA into an engine writer (or splice it socket → file) with an ACK per durable
window; downloads send the file from a sendfile thread (:mod:`freight.server.file_sender`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import IO

from freight.core import UploadSession, UploadWriter
from freight.core.blobs import BlobReader, SendfileSource
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
from freight.protocol.frame_rules import MAX_NAME, VERSION, IdleTimeout, UnexpectedFrame
from freight.protocol.frame_types import (
    Accepted,
    Ack,
    DataChunk,
    Done,
    ErrorFrame,
    FileInfo,
    Finished,
    Get,
    Hello,
    Put,
    Resume,
    Welcome,
    encode_data_header,
)
from freight.protocol.metadata import path_name, with_relative_path
from freight.server.download import STREAM_BUFFER
from freight.server.file_prefix import complete_file_id
from freight.server.file_sender import send_file
from freight.server.ingest import WriterFeed
from freight.server.principals import check_visible
from freight.server.splice import open_splice
from freight.server.stall import Direction, Stalled, watch_progress
from freight.server.tcp_connection import ConnectionPlumbing

# The transport's one logger, whichever of its modules logs.
log = logging.getLogger("freight.server.tcp")

NO_DIGEST = bytes(32)


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


class TcpConnection(ConnectionPlumbing):
    """One client connection's protocol: :meth:`_serve` runs it from HELLO to the end."""

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
        self._credential = hello.token or None
        await self._identify()
        self._send(Welcome(self._settings.window, self._settings.max_data))
        self._in_sync = True

    async def _identify(self) -> None:
        """Who HELLO's token stands for, asked again before every request: a token revoked
        while the connection is open ends it at its next request."""
        try:
            self._principal = await self._server.gate.identify(self._credential)
        except Unauthorized:
            raise Unauthorized("missing or wrong token") from None

    async def _serve_request(self) -> None:
        try:
            request = await self._next_frame()
        except ClientDisconnected:
            raise _Closed from None  # a client leaving between requests is the normal end
        await self._identify()
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
        async with self._server.gate.creating(self._principal, put.size):
            session = await self._engine.create(
                length=put.size,
                metadata=_put_metadata(put),
                client=self._peer_address(),
                # Kept for a later RESUME, and checked if the upload is finished without one.
                declared_sha256=put.sha256.hex() if put.sha256 is not None else None,
                owner=self._principal.owner,
            )
        await self._receive(session, put.sha256)

    async def _resume(self, resume: Resume) -> None:
        session = await self._owned(resume.upload_id)
        if self._principal.read_only:
            raise UploadForbidden("this token is read-only: it may not upload")
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

    async def _owned(self, upload_id: str) -> UploadSession:
        """The upload, if this connection's principal may see it (404 as unknown else)."""
        await check_visible(self._principal, self._engine.sessions, upload_id)
        return await self._engine.get(upload_id)

    async def _get(self, get: Get) -> None:
        # A prefix of an id, as `freight ls` shows them: TCP has no listing to complete it.
        upload_id = await complete_file_id(self._engine, self._principal, get.upload_id)
        session = await self._owned(upload_id)
        if not session.is_finished:
            raise UploadIncomplete("the upload is not finished yet")
        size = session.length or 0
        if get.offset > size:
            raise RangeNotSatisfiable(f"offset {get.offset} is past the end ({size})", size=size)
        available = size - get.offset
        length = available if get.length is None else min(get.length, available)
        blobs = self._engine.blobs
        info = FileInfo(size, get.offset, length, _digest(session), _name(session))
        if isinstance(blobs, SendfileSource):
            try:
                file = open(blobs.file_path(session.id), "rb")  # noqa: SIM115 - closed below
            except FileNotFoundError as exc:
                raise UploadNotFound("the file was deleted") from exc
            with file:
                self._send(info)
                self._in_sync = False
                await self._send_range(file, get.offset, length)
        else:
            reader = await self._engine.open_reader(session)
            try:
                self._send(info)
                self._in_sync = False
                await self._stream_range(reader, get.offset, length)
            finally:
                reader.close()
        self._in_sync = True

    async def _send_range(self, file: IO[bytes], offset: int, length: int) -> None:
        """Send the range as DATA frames, all of them from one sendfile thread."""
        transport = self._transport
        assert transport is not None
        try:
            # A client that stops reading must not hold the connection forever.
            async with watch_progress(transport, Direction.SEND, self._settings.idle_timeout):
                sent = await send_file(
                    transport,
                    file,
                    offset,
                    length,
                    frame=self._settings.send_frame,
                    header=encode_data_header,
                )
        except Stalled:
            raise IdleTimeout("the client stopped reading the download") from None
        except (ConnectionError, RuntimeError) as exc:
            raise ClientDisconnected("the client went away during a download") from exc
        self._server.on_sent(sent)
        if sent != length:
            raise FreightError("the stored file is shorter than its recorded size")

    async def _stream_range(self, reader: BlobReader, offset: int, length: int) -> None:
        """Send a range read from a store without sendfile, through one reused buffer."""
        transport = self._transport
        assert transport is not None
        view = memoryview(bytearray(min(STREAM_BUFFER, length)))
        position, end = offset, offset + length
        while position < end:
            frame_end = min(end, position + self._settings.send_frame)
            transport.write(encode_data_header(position, frame_end - position))
            while position < frame_end:
                want = view[: min(len(view), frame_end - position)]
                got = await asyncio.to_thread(reader.read_into, position, want)
                if got <= 0:
                    raise FreightError("the stored file is shorter than its recorded size")
                # The transport copies what it cannot send at once: the buffer is free again.
                transport.write(want[:got])
                position += got
                self._server.on_sent(got)
                await self._room_to_send()

    async def _room_to_send(self) -> None:
        try:
            async with asyncio.timeout(self._settings.idle_timeout):
                await self._can_send.wait()
        except TimeoutError:
            raise IdleTimeout("the client stopped reading the download") from None
        if self._transport is None or self._transport.is_closing():
            raise ClientDisconnected("the client went away during a download")


def _put_metadata(put: Put) -> dict[str, str | None]:
    """A PUT's name; a path (checked as PUT was decoded) is kept whole as ``relativePath``."""
    if not put.is_path:
        return {"filename": put.name or None}
    return with_relative_path({"filename": path_name(put.name)}, put.name)


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
