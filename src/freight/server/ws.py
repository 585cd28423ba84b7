"""WebSocket uploads at ``/api/ws``: a thin adapter from docs/websocket.md to the engine.

One connection uploads (part of) one file. The client opens with ``start`` or ``resume``;
the server answers ``ready`` with the durable offset and a credit, then streams binary
frames into a single engine writer. Every ``window`` bytes it makes them durable
(``writer.checkpoint()``) and grants more credit, so several frames are always in flight
while the bytes the client may have sent beyond the durable offset stay bounded by the
credit. ``done`` commits and finishes the upload. A dropped connection leaves the writer's
abort path to record whatever reached the disk; ``resume`` continues from there.

The bytes take a short way. Right after the handshake a :class:`_Receiver` takes the
connection's transport over from aiohttp (plain sockets; TLS stays with aiohttp). It reads
the socket 256 KiB at a time into reused buffers and finds the frames itself. Once the
upload is open, each binary frame's payload is gathered in one reused frame buffer,
unmasked there by aiohttp's C helper and copied into the writer's staging buffer, which
worker threads write and hash. Every other frame (text, ping, pong, close, fragments,
anything unusual) is handed to aiohttp as it arrived, so aiohttp's parser, its checks and
its close handshake still see them. aiohttp's own path allocates a new object for every
read and copies each payload four or five times (the cost that made WebSocket uploads
dearer than TCP ones); this one allocates nothing per read and copies a payload twice.

Memory per connection is bounded by the read buffer and one frame buffer, aiohttp's frame
limit (``max_msg_size``) for the frames it parses, its small read queue and the writer's two
buffers, whatever the file size.

Handshake rules: a wrong ``Authorization`` header is refused (401) before the upgrade; a
server without a token refuses a browser from another origin (403). With a token and no
valid header the first message must carry it (browsers cannot set headers on a WebSocket).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hmac
import logging
import re
from dataclasses import dataclass
from typing import Any

from aiohttp import WSCloseCode, WSMessage, WSMsgType, web

from freight.core import UploadEngine, UploadSession, UploadWriter
from freight.errors import (
    BadRequest,
    ChecksumMismatch,
    ClientDisconnected,
    FreightError,
    Unauthorized,
    UploadForbidden,
    UploadTooLarge,
)
from freight.protocol.ws_messages import (
    CLOSE_NORMAL,
    MAX_FRAME_HEADER,
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PONG,
    OP_TEXT,
    CreditExceeded,
    Done,
    Finished,
    FrameHeader,
    FrameTooLarge,
    Message,
    Ready,
    ReceiveWindow,
    Resume,
    Start,
    UnexpectedMessage,
    build_message,
    close_code_for,
    error_reply,
    is_same_origin,
    parse_client_message,
    parse_frame_header,
)
from freight.server.body import interrupter
from freight.server.state import ENGINE, SETTINGS

try:  # aiohttp's C helper, 8 bytes at a time; its module is private, hence the way out
    from aiohttp._websocket.helpers import websocket_mask as unmask
except ImportError:  # pragma: no cover - another aiohttp layout
    from freight.protocol.ws_messages import apply_mask as unmask

__all__ = ["WS_PATH", "WS_SETTINGS", "WsSettings", "add_ws_routes"]

log = logging.getLogger(__name__)

WS_PATH = "/api/ws"
MiB = 1024 * 1024
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class WsSettings:
    """Flow-control sizes; docs/websocket.md gives the measurements behind the defaults.

    ``credit`` must cover ``window + max_frame`` (see :class:`ReceiveWindow`).
    """

    max_frame: int = 256 * 1024
    window: int = 16 * MiB
    credit: int = 32 * MiB
    idle_timeout: float = 300.0  # no message for this long: free the upload for others
    heartbeat: float = 30.0  # ping an idle peer; no pong within half of it drops the link
    close_timeout: float = 5.0  # how long to wait for the client's half of a close


WS_SETTINGS = web.AppKey("ws_settings", WsSettings)


def add_ws_routes(app: web.Application, settings: WsSettings | None = None) -> None:
    app[WS_SETTINGS] = settings or WsSettings()
    app.router.add_get(WS_PATH, ws_endpoint)


async def ws_endpoint(request: web.Request) -> web.StreamResponse:
    token_proven = check_handshake(request, request.app[SETTINGS].token)
    settings = request.app[WS_SETTINGS]
    socket = _UploadSocket(
        max_frame=settings.max_frame,
        compress=False,  # deflating file bytes costs CPU and opens the door to zip bombs
        heartbeat=settings.heartbeat,
        timeout=settings.close_timeout,
        autoclose=False,  # a client's close is answered once its bytes are recorded
    )
    await socket.prepare(request)
    token = None if token_proven else request.app[SETTINGS].token
    # Sooner than the heartbeat or the idle timeout could notice silence.
    alive_every = min(settings.heartbeat, settings.idle_timeout) / 4
    receiver = _Receiver.take_over(request, alive_every=alive_every)
    await _Connection(request, socket, settings, token, receiver).run()
    return socket


def check_handshake(request: web.Request, token: str | None) -> bool:
    """Refuse before the upgrade what can be refused; True if the token is already proven."""
    header = request.headers.get("Authorization")
    if token is not None and header is not None:
        given = header.encode("utf-8", "surrogateescape")  # aiohttp keeps odd bytes that way
        if not hmac.compare_digest(given, f"Bearer {token}".encode()):
            raise Unauthorized("a valid 'Authorization: Bearer <token>' header is required")
        return True
    origin = request.headers.get("Origin")
    if token is None and origin is not None and not _same_origin(request, origin):
        raise UploadForbidden("WebSocket uploads from another origin need the server's token")
    return token is None


def _same_origin(request: web.Request, origin: str) -> bool:
    # A reverse proxy terminating TLS forwards the scheme. Browsers cannot forge these
    # headers on a WebSocket, and the check exists only to stop browsers.
    forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    scheme = forwarded if forwarded in ("http", "https") else request.scheme
    return is_same_origin(origin, scheme=scheme, host=request.host)


class _IdleTimeout(ClientDisconnected):
    """The client sent nothing for ``idle_timeout`` seconds."""


class _UploadSocket(web.WebSocketResponse):
    """Refuses frames over ``max_frame`` from their header, and says why before closing.

    aiohttp checks a frame's declared length before buffering any payload, then closes with
    1009 from inside ``receive()``; ``close`` is the one moment the error can still be sent.
    """

    def __init__(self, *, max_frame: int, **options: Any) -> None:
        # One byte more: aiohttp refuses a message whose length reaches its limit.
        super().__init__(max_msg_size=max_frame + 1, **options)
        self.max_frame = max_frame

    async def close(
        self, *, code: int = WSCloseCode.OK, message: bytes = b"", drain: bool = True
    ) -> bool:
        if code == WSCloseCode.MESSAGE_TOO_BIG and not message and not self.closed:
            error = FrameTooLarge(
                f"a frame was larger than max_frame ({self.max_frame})", max_frame=self.max_frame
            )
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self.send_str(build_message(error_reply(error)))
            message = error.code.encode()
        return await super().close(code=code, message=message, drain=drain)


class _Connection:
    """One upload connection, from the opening message to ``finished`` or an error."""

    def __init__(
        self,
        request: web.Request,
        socket: _UploadSocket,
        settings: WsSettings,
        token: str | None,
        receiver: _Receiver | None,
    ) -> None:
        self.request = request
        self.engine: UploadEngine = request.app[ENGINE]
        self.base_path = request.app[SETTINGS].base_path
        self.socket = socket
        self.settings = settings
        self.token = token  # still to be proven by the first message, if not None
        self.receiver = receiver  # None: every frame comes through aiohttp

    async def run(self) -> None:
        try:
            await self._serve()
        except ClientDisconnected as exc:
            log.info("WebSocket upload: %s", exc.message)
            # A client's close is answered only now that the upload is released, so a client
            # that reconnects once its close handshake is over never finds the upload locked.
            code = WSCloseCode.GOING_AWAY if isinstance(exc, _IdleTimeout) else CLOSE_NORMAL
            self._release_receiver()
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self.socket.close(code=code)
        except FreightError as exc:
            await self._fail(exc)
        except Exception as exc:
            log.error("WebSocket upload failed", exc_info=exc)
            await self._fail(FreightError("internal server error"))

    async def _serve(self) -> None:
        opening = await self._receive_opening()
        session = await self._open(opening)
        if session.is_finished:  # a resume whose "done" was answered but never arrived
            _agreed_sha256(session.sha256, opening.sha256)
            await self._finish(session)
            return
        expected = _expected_sha256(opening, session)
        # A resume takes the upload over from an older connection the server still holds.
        interrupt = interrupter(self.request)
        async with self.engine.writer(session.id, None, interrupt=interrupt) as writer:
            session = await self.engine.get(session.id)  # where the takeover left it
            window = self._window(opening, session)
            await self._send(self._ready(session, window))
            done = await self._receive_data(writer, window)
            await writer.commit()
        expected = _agreed_sha256(expected, done.sha256)
        await self._finish(await self.engine.finish(session.id, expected_sha256=expected))

    async def _receive_opening(self) -> Start | Resume:
        message = parse_client_message(await self._receive_text())
        if isinstance(message, Done):
            raise UnexpectedMessage('a connection opens with "start" or "resume"')
        if self.token is not None:
            given = (message.token or "").encode()
            if not hmac.compare_digest(given, self.token.encode()):
                raise Unauthorized("a valid token is required (header or first message)")
        return message

    async def _open(self, opening: Start | Resume) -> UploadSession:
        if isinstance(opening, Resume):
            session = await self.engine.get(opening.id)
            if session.length is None:
                raise BadRequest("this upload has no declared length; WebSocket uploads need one")
            return session
        metadata: dict[str, str | None] = {"filename": opening.name}
        if opening.sha256 is not None:
            metadata["sha256"] = opening.sha256  # kept for a resume on another connection
        return await self.engine.create(length=opening.size, metadata=metadata)

    def _window(self, opening: Start | Resume, session: UploadSession) -> ReceiveWindow:
        max_frame = min(opening.max_frame or self.settings.max_frame, self.settings.max_frame)
        return ReceiveWindow(
            offset=session.offset,
            size=session.length or 0,
            credit=self.settings.credit,
            window=self.settings.window,
            max_frame=max_frame,
        )

    def _ready(self, session: UploadSession, window: ReceiveWindow) -> Ready:
        return Ready(
            id=session.id,
            offset=session.offset,
            size=session.length or 0,
            credit=window.opening_credit,
            max_frame=window.max_frame,
            url=f"{self.base_path}{session.id}",
        )

    async def _receive_data(self, writer: UploadWriter, window: ReceiveWindow) -> Done:
        """Binary frames into the writer until ``done``; grants credit window by window.

        The receiver puts most frames into the writer itself and stops reading when a
        window is full; frames it leaves to aiohttp arrive here as messages.
        """
        receiver = self.receiver
        if receiver is not None:
            receiver.attach(writer, window)
        incoming: asyncio.Future[WSMessage] | None = None
        try:
            while True:
                incoming = incoming or asyncio.ensure_future(self._receive())
                if receiver is not None:
                    await receiver.wait(incoming)
                    if receiver.window_due:
                        await self._grant(writer, window)
                        receiver.window_granted()
                        continue
                msg = await incoming
                incoming = None
                if msg.type is WSMsgType.BINARY:
                    window.accept(len(msg.data))
                    await _write(writer, msg.data)
                    if window.window_full:
                        await self._grant(writer, window)
                    continue
                message = parse_client_message(msg.data)
                if isinstance(message, Done):
                    return message
                raise UnexpectedMessage(f'"{message.op}" is not allowed once data flows')
        finally:
            if incoming is not None:
                incoming.cancel()
                await asyncio.wait([incoming])
                if not incoming.cancelled():
                    incoming.exception()  # retrieved: the error that ends this is another
            if receiver is not None:
                await receiver.detach()

    async def _grant(self, writer: UploadWriter, window: ReceiveWindow) -> None:
        await self._send(window.grant(await writer.checkpoint()))

    async def _finish(self, session: UploadSession) -> None:
        url = f"{self.base_path}{session.id}"
        size = session.length or 0
        await self._send(Finished(id=session.id, url=url, sha256=session.sha256 or "", size=size))
        self._release_receiver()
        await self.socket.close(code=CLOSE_NORMAL)

    # the socket ---------------------------------------------------------------------------

    async def _receive(self) -> WSMessage:
        """The next text or binary message; a close, error or silence ends the upload."""
        if self.receiver is not None:
            self.receiver.next_message()
        try:
            msg = await self.socket.receive(timeout=self.settings.idle_timeout)
        except TimeoutError as exc:
            raise _IdleTimeout("the client sent nothing for too long") from exc
        if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
            return msg
        raise ClientDisconnected(f"the connection ended ({msg.type.name.lower()})")

    async def _receive_text(self) -> str:
        msg = await self._receive()
        if msg.type is not WSMsgType.TEXT:
            raise UnexpectedMessage('binary data before "start" or "resume"')
        return str(msg.data)

    async def _send(self, message: Message) -> None:
        try:
            await self.socket.send_str(build_message(message))
        except ConnectionError as exc:
            raise ClientDisconnected("the connection ended while the server was answering") from exc

    async def _fail(self, error: FreightError) -> None:
        """Report ``error`` and close with its code; quiet if the client is already gone."""
        log.info("WebSocket upload refused: %s (%s)", error.message, error.code)
        self._release_receiver()
        if self.socket.closed:
            return
        try:
            await self.socket.send_str(build_message(error_reply(error)))
            await self.socket.close(code=close_code_for(error), message=error.code.encode())
        except (ConnectionError, RuntimeError):
            pass

    def _release_receiver(self) -> None:
        """Let every frame through to aiohttp from now on: its close handshake reads them."""
        if self.receiver is not None:
            self.receiver.release()


async def _write(writer: UploadWriter, data: bytes) -> None:
    """A binary message aiohttp parsed, into the writer (waiting while the disk is behind)."""
    view = memoryview(data)
    while view.nbytes:
        view = view[_fill(writer, view) :]
        if view.nbytes:
            await writer.hand_off()


def _fill(writer: UploadWriter, data: memoryview) -> int:
    """Copy the start of ``data`` into the writer's staging buffer; returns how much it took.

    A full buffer goes to the worker threads at once if the other one is written already;
    otherwise copying stops there. (``memoryview`` assignment: a plain copy, where assigning
    to a ``bytearray`` slice would first copy the bytes into a temporary ``bytearray``.)
    """
    taken = 0
    while taken < data.nbytes:
        if writer.is_full and not writer.hand_off_nowait():
            return taken
        space = writer.free_space()
        if not space.nbytes:
            raise UploadTooLarge("a frame runs past the upload's length")
        count = min(space.nbytes, data.nbytes - taken)
        space[:count] = data[taken : taken + count]
        writer.filled(count)
        taken += count
    if writer.is_full:
        writer.hand_off_nowait()
    return taken


class _Mode(enum.Enum):
    HEADER = "header"  # reading a frame header
    DATA = "data"  # an upload's binary frame, gathered in the frame buffer
    FORWARD = "forward"  # a frame for aiohttp, passed on as it arrives
    SKIP = "skip"  # the payload of a refused frame, dropped


# An unsolicited pong ("a unidirectional heartbeat", RFC 6455 5.5.3), masked with a zero key.
# aiohttp takes incoming bytes as signs of life (its heartbeat and idle timeout); bytes read
# past it are too, so it gets one of these now and then while they flow.
_SIGN_OF_LIFE = bytes((0x80 | OP_PONG, 0x80, 0, 0, 0, 0))
_READ_SIZE = 256 * 1024  # what asyncio reads at once for a plain protocol


class _Receiver(asyncio.BufferedProtocol):
    """Holds one WebSocket connection's transport from the handshake on.

    The socket is read 256 KiB at a time and the frames found here. While an upload is
    attached, a final, unextended binary frame is checked against the :class:`ReceiveWindow`
    from its header, its payload gathered in the frame buffer, unmasked there and copied
    into the writer's staging buffer. Every other frame goes to aiohttp's protocol byte for
    byte, and reading stops after each text, binary or close message until the connection
    asks for the next one, so those and the frames read here stay in order. Reading also
    stops while a full window waits for its credit and while the disk is behind (both
    staging buffers taken): TCP pushes back on the client.
    """

    def __init__(
        self, transport: asyncio.Transport, aiohttp_protocol: asyncio.Protocol, alive_every: float
    ) -> None:
        self._transport = transport
        self._aiohttp = aiohttp_protocol
        self._alive_every = alive_every
        self._loop = asyncio.get_running_loop()
        self._read_buffer = memoryview(bytearray(_READ_SIZE))
        self._header = bytearray(MAX_FRAME_HEADER)
        self._header_fill = 0
        self._header_need = 2
        self._frame = bytearray()  # the payload of the binary frame being read
        self._frame_fill = 0
        self._mask: bytes | None = None
        self._current: FrameHeader | None = None
        self._mode = _Mode.HEADER
        self._left = 0  # payload bytes of the current frame still to come
        self._fragmented = False  # inside a fragmented message (aiohttp's to assemble)
        self._stash = bytearray()  # bytes read while holding, decoded once released
        self._holds: set[str] = set()
        self._free = False  # no upload attached any more: never hold for messages
        self._writer: UploadWriter | None = None
        self._window: ReceiveWindow | None = None
        self._staged = 0  # bytes of the frame buffer copied into the writer
        self._room: asyncio.Task[None] | None = None  # waiting for a staging buffer
        self._wakeup: asyncio.Future[None] | None = None
        self._alive_at = 0.0
        self.failure: FreightError | None = None

    @classmethod
    def take_over(cls, request: web.Request, *, alive_every: float) -> _Receiver | None:
        """Put a receiver under ``request``'s connection, or None where it cannot go.

        aiohttp is told the client is alive at least every ``alive_every`` seconds while
        binary frames arrive.
        """
        transport = request.transport
        if not isinstance(transport, asyncio.Transport) or transport.is_closing():
            return None
        # TLS transports re-frame the stream; only plain sockets are taken over.
        if transport.get_extra_info("sslcontext") is not None:
            return None
        previous = transport.get_protocol()
        if not isinstance(previous, asyncio.Protocol):
            return None
        receiver = cls(transport, previous, alive_every)
        transport.set_protocol(receiver)
        if not transport.is_reading():
            transport.resume_reading()
        return receiver

    # the connection's side ----------------------------------------------------------------

    def attach(self, writer: UploadWriter, window: ReceiveWindow) -> None:
        """Read binary frames into ``writer`` from now on, within ``window``."""
        self._writer, self._window = writer, window

    @property
    def window_due(self) -> bool:
        return "window" in self._holds

    def window_granted(self) -> None:
        self._release_hold("window")

    def next_message(self) -> None:
        """The connection is done with the last message it got: read on."""
        self._release_hold("message")

    async def wait(self, incoming: asyncio.Future[Any]) -> None:
        """Until ``incoming`` is done or a window is due; raises what failed reading.

        A message comes before a failure: nothing is read after a message until the
        connection has handled it.
        """
        if self.failure is None and not self.window_due:
            self._wakeup = self._loop.create_future()
            try:
                await asyncio.wait({incoming, self._wakeup}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                self._wakeup = None
        if self.failure is not None and not incoming.done():
            raise self.failure

    async def detach(self) -> None:
        """Stop writing (the writer is about to close); every frame goes to aiohttp."""
        self._writer = self._window = None
        room = self._room
        if room is not None:
            room.cancel()
            await asyncio.wait([room])
        self.release()

    def release(self) -> None:
        """Hold nothing any more and pass every frame on to aiohttp."""
        self._free = True
        self._holds.clear()
        self._resume()

    # asyncio.BufferedProtocol -------------------------------------------------------------

    def get_buffer(self, sizehint: int) -> memoryview:
        # Whatever comes, several frames at a time: a copy out of here costs less than the
        # read more it would take to put a payload straight where it goes.
        return self._read_buffer

    def buffer_updated(self, nbytes: int) -> None:
        self._consume(self._read_buffer[:nbytes])
        if self._holds and self._transport.is_reading():
            self._transport.pause_reading()  # aiohttp may resume reading under a hold
        if self._writer is not None and self._mode is not _Mode.FORWARD:
            now = self._loop.time()  # aiohttp is between frames: it may hear of this read
            if now - self._alive_at >= self._alive_every:
                self._alive_at = now
                self._aiohttp.data_received(_SIGN_OF_LIFE)

    def eof_received(self) -> bool | None:
        return self._aiohttp.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ClientDisconnected("the connection was lost"))
        self._aiohttp.connection_lost(exc)

    def pause_writing(self) -> None:
        self._aiohttp.pause_writing()

    def resume_writing(self) -> None:
        self._aiohttp.resume_writing()

    # decoding -----------------------------------------------------------------------------

    def _consume(self, data: memoryview) -> None:
        """Decode bytes read; keep what follows a hold for later."""
        while data.nbytes:
            if self._holds:
                self._stash += data
                return
            if self._mode is _Mode.HEADER:
                taken = self._read_header(data)
            else:
                taken = min(self._left, data.nbytes)
                if self._mode is _Mode.DATA:
                    end = self._frame_fill + taken
                    memoryview(self._frame)[self._frame_fill : end] = data[:taken]
                    self._frame_fill = end
                elif self._mode is _Mode.FORWARD:
                    self._aiohttp.data_received(bytes(data[:taken]))
                self._payload_read(taken)
            data = data[taken:]

    def _read_header(self, data: memoryview) -> int:
        if not self._header_fill and data.nbytes >= MAX_FRAME_HEADER:
            header = parse_frame_header(data)  # all there: no copy
            assert isinstance(header, FrameHeader)
            self._start_frame(header, data[: header.size])
            return header.size
        taken = min(self._header_need - self._header_fill, data.nbytes)
        end = self._header_fill + taken
        memoryview(self._header)[self._header_fill : end] = data[:taken]
        self._header_fill = end
        if end == self._header_need:
            raw = memoryview(self._header)[:end]
            header = parse_frame_header(raw)
            if isinstance(header, int):
                self._header_need = header
            else:
                self._start_frame(header, raw)
        return taken

    def _start_frame(self, header: FrameHeader, raw: memoryview) -> None:
        self._current, self._left = header, header.length
        self._header_fill, self._header_need = 0, 2
        window = self._window
        direct = header.fin and not header.rsv and header.opcode == OP_BINARY
        if window is not None and direct and not self._fragmented:
            try:
                window.accept(header.length)
            except (FrameTooLarge, CreditExceeded) as exc:
                self._fail(exc)
                self._mode = _Mode.SKIP
            else:
                self._mode, self._mask, self._frame_fill = _Mode.DATA, header.mask, 0
                if len(self._frame) != header.length:
                    self._frame = bytearray(header.length)
        else:
            self._mode = _Mode.FORWARD
            self._aiohttp.data_received(bytes(raw))
            if header.opcode in (OP_CONTINUATION, OP_TEXT, OP_BINARY):
                self._fragmented = not header.fin
        if not self._left:
            self._end_frame()

    def _payload_read(self, nbytes: int) -> None:
        self._left -= nbytes
        if not self._left:
            self._end_frame()

    def _end_frame(self) -> None:
        mode, header = self._mode, self._current
        self._mode = _Mode.HEADER
        if mode is _Mode.DATA:
            self._frame_arrived()
        elif mode is _Mode.FORWARD and _ends_message(header) and not self._free:
            self._hold("message")  # until the connection asks for the next one
            self._wake()

    def _frame_arrived(self) -> None:
        if self._writer is None:
            return  # the upload ended while this frame came in
        if self._mask is not None:
            unmask(self._mask, self._frame)
        self._staged = 0
        self._stage()

    def _stage(self) -> None:
        """Copy the frame into the writer; hold while both staging buffers are taken."""
        writer, window = self._writer, self._window
        if writer is None or window is None:
            return
        frame = memoryview(self._frame)
        try:
            self._staged += _fill(writer, frame[self._staged :])
        except Exception as exc:
            self._fail(_as_freight_error(exc))
            return
        if self._staged < frame.nbytes:
            self._hold("disk")
            self._room = asyncio.ensure_future(self._make_room(writer))
        elif window.window_full:
            self._hold("window")
            self._wake()

    async def _make_room(self, writer: UploadWriter) -> None:
        try:
            await writer.hand_off()
        except Exception as exc:
            self._fail(_as_freight_error(exc))
            return
        finally:
            self._room = None
        self._holds.discard("disk")
        self._stage()
        self._resume()

    # holding ------------------------------------------------------------------------------

    def _hold(self, reason: str) -> None:
        self._holds.add(reason)
        if self._transport.is_reading():
            self._transport.pause_reading()

    def _release_hold(self, reason: str) -> None:
        if reason in self._holds:
            self._holds.discard(reason)
            self._resume()

    def _resume(self) -> None:
        """Decode what was kept while holding, then read on unless held again."""
        if self._holds:
            return
        if self._stash:
            stash, self._stash = self._stash, bytearray()
            self._consume(memoryview(stash))
        if not self._holds and not self._transport.is_closing():
            self._transport.resume_reading()

    def _fail(self, exc: FreightError) -> None:
        """Reading failed: tell the connection; frames go to aiohttp for the close."""
        if self.failure is None:
            self.failure = exc
        self._writer = self._window = None
        self._wake()
        self.release()

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)


def _ends_message(header: FrameHeader | None) -> bool:
    """A frame after which aiohttp has a message for the connection to read."""
    if header is None or not header.fin:
        return False
    return header.opcode in (OP_TEXT, OP_BINARY, OP_CONTINUATION, OP_CLOSE)


def _as_freight_error(exc: Exception) -> FreightError:
    if isinstance(exc, FreightError):
        return exc
    log.error("WebSocket upload failed", exc_info=exc)
    return FreightError("internal server error")


def _expected_sha256(opening: Start | Resume, session: UploadSession) -> str | None:
    """What ``start`` promised (kept in the metadata) and what this opening says."""
    promised = session.metadata.get("sha256")
    if promised is not None and not _SHA256.fullmatch(promised):
        promised = None  # a tus client's own "sha256" metadata is none of our business
    return _agreed_sha256(promised, opening.sha256)


def _agreed_sha256(first: str | None, second: str | None) -> str | None:
    """One expected SHA-256 from two optional ones; two different ones can never match."""
    if first is not None and second is not None and first != second:
        raise ChecksumMismatch("the SHA-256 values given for this upload disagree")
    return second or first
