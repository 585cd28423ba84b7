"""WebSocket uploads at ``/api/ws``: a thin adapter from docs/websocket.md to the engine.

One connection uploads (part of) one file. The client opens with ``start`` or ``resume``;
the server answers ``ready`` with the durable offset and a credit, then streams binary
frames into a single engine writer. Every ``window`` bytes it makes them durable
(``writer.checkpoint()``) and grants more credit, so several frames are always in flight
while the bytes the client may have sent beyond the durable offset stay bounded by the
credit. ``done`` commits and finishes the upload. A dropped connection leaves the writer's
abort path to record whatever reached the disk; ``resume`` continues from there.

The bytes take a short way (:mod:`.ws_receiver`). Right after the handshake a
:class:`Receiver` takes the connection's transport over from aiohttp (plain sockets; TLS
stays with aiohttp). It reads
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
)
from freight.protocol.ws_messages import (
    CLOSE_NORMAL,
    Done,
    Finished,
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
)
from freight.server.body import interrupter
from freight.server.origins import origin_permitted
from freight.server.state import ENGINE, SETTINGS
from freight.server.ws_receiver import Receiver

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
    receiver = Receiver.take_over(request, alive_every=alive_every)
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
    if not origin_permitted(request):
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
        receiver: Receiver | None,
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
        return await self.engine.create(
            length=opening.size, metadata=metadata, client=self.request.remote
        )

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
                    await writer.write(msg.data)
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
