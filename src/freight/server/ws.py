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
buffers, whatever the file size. Until its opening message a connection holds a 4 KiB read
buffer only: ~23 KiB in all, where the 256 KiB buffer made it 271 KiB.

Who may connect, and how many may wait for their first message, is :mod:`.ws_admission`.
Silence is counted in messages (text or data), never pings or pongs: the opening must come
within ``auth_timeout`` of the upgrade, every later message within ``idle_timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from aiohttp import WSCloseCode, WSMessage, WSMsgType, web

from freight.core import UploadEngine, UploadSession, UploadWriter
from freight.core.users import Principal
from freight.errors import (
    BadRequest,
    ChecksumMismatch,
    ClientDisconnected,
    FreightError,
    Unauthorized,
    UploadForbidden,
)
from freight.protocol.metadata import with_relative_path
from freight.protocol.ws_message_types import (
    Done,
    Finished,
    Message,
    Ready,
    Resume,
    Start,
    UnexpectedMessage,
    build_message,
    error_reply,
)
from freight.protocol.ws_parse import parse_client_message
from freight.protocol.ws_rules import CLOSE_NORMAL, ReceiveWindow, close_code_for
from freight.server.body import interrupter
from freight.server.logs import request_client
from freight.server.metrics import received_counter
from freight.server.principals import GATE, check_visible
from freight.server.state import ENGINE, SETTINGS
from freight.server.ws_admission import (
    PENDING,
    PendingConnections,
    PendingTicket,
    check_handshake,
    not_an_upgrade,
)
from freight.server.ws_receiver import Receiver
from freight.server.ws_socket import UploadSocket, application_message, drop_receive

__all__ = ["WS_PATH", "WS_SETTINGS", "WsSettings", "add_ws_routes", "ws_going_away"]

log = logging.getLogger(__name__)

WS_PATH = "/api/ws"
MiB = 1024 * 1024


@dataclass(frozen=True)
class WsSettings:
    """Flow-control sizes; docs/websocket.md gives the measurements behind the defaults.

    ``credit`` must cover ``window + max_frame`` (see :class:`ReceiveWindow`).
    """

    max_frame: int = 256 * 1024
    window: int = 16 * MiB
    credit: int = 32 * MiB
    # No message (text or data; pings and pongs do not count) for this long: free the
    # upload for others.
    idle_timeout: float = 300.0
    # The opening message (which carries the token when no header did) must come this soon;
    # until then the connection is pending (see :mod:`.ws_admission`).
    auth_timeout: float = 10.0
    max_pending: int = 128  # pending connections at once; more are refused with 503
    heartbeat: float = 30.0  # ping an idle peer; no pong within half of it drops the link
    close_timeout: float = 5.0  # how long to wait for the client's half of a close


WS_SETTINGS = web.AppKey("ws_settings", WsSettings)
_LIVE = web.AppKey("ws_live", set["_Connection"])
GOING_AWAY_REASON = b"server shutting down"


def add_ws_routes(app: web.Application, settings: WsSettings | None = None) -> None:
    app[WS_SETTINGS] = settings or WsSettings()
    app[PENDING] = PendingConnections()
    app[_LIVE] = set()
    app.router.add_get(WS_PATH, ws_endpoint)


def ws_going_away(app: web.Application) -> None:
    """Shutdown: every connection ends at its next durable point with close code 1001.

    An upload's bytes so far are recorded first (as after a dropped link), then the close
    frame says "going away", so its client resumes against the next server. Aborting the
    socket instead left clients with 1006 and no reason.
    """
    live = app[_LIVE]
    for connection in list(live):
        connection.go_away()


async def ws_endpoint(request: web.Request) -> web.StreamResponse:
    gate = request.app[GATE]
    settings = request.app[WS_SETTINGS]
    proved = await check_handshake(request, gate)
    header_proved = proved is not None
    socket = UploadSocket(
        max_frame=settings.max_frame,
        compress=False,  # deflating file bytes costs CPU and opens the door to zip bombs
        heartbeat=settings.heartbeat,
        timeout=settings.close_timeout,
        autoclose=False,  # a client's close is answered once its bytes are recorded
    )
    if not socket.can_prepare(request).ok:
        raise await not_an_upgrade(gate, header_proved)
    ticket = None if header_proved else request.app[PENDING].admit(settings.max_pending)
    try:
        await socket.prepare(request)
        # Reading binary frames needs aiohttp's heartbeat told the client is alive.
        receiver = Receiver.take_over(request, alive_every=settings.heartbeat / 4)
        connection = _Connection(request, socket, settings, proved, receiver, ticket)
        live = request.app[_LIVE]
        live.add(connection)
        try:
            await connection.run()
        finally:
            live.discard(connection)
    finally:
        if ticket is not None:
            ticket.release()
    return socket


class _IdleTimeout(ClientDisconnected):
    """The client sent no message for ``idle_timeout`` (before its opening: ``auth_timeout``)."""


class _GoingAway(ClientDisconnected):
    """The server shuts down; the client is to come back later and resume."""


class _Connection:
    """One upload connection, from the opening message to ``finished`` or an error."""

    def __init__(
        self,
        request: web.Request,
        socket: UploadSocket,
        settings: WsSettings,
        principal: Principal | None,
        receiver: Receiver | None,
        pending: PendingTicket | None,
    ) -> None:
        self.request = request
        self.engine: UploadEngine = request.app[ENGINE]
        self.files_path = request.app[SETTINGS].files_path
        self.socket = socket
        self.settings = settings
        self.gate = request.app[GATE]
        self.principal = principal  # None: still to be proven by the first message
        self.receiver = receiver  # None: every frame comes through aiohttp
        self.pending = pending  # released once the opening message proved the client
        self.loop = asyncio.get_running_loop()
        # The idle clock: the opening must come within auth_timeout of the upgrade, however
        # slowly its bytes trickle in; later messages within idle_timeout of the last
        # message, data or thing the server sent.
        self.accepted_at = self.heard_at = self.loop.time()
        self.opened = False
        self.leaving = False  # the server shuts down: end at the next durable point
        self._received = received_counter(request.app, "ws")
        self._counted_to = 0  # the writer position up to which received bytes were counted
        self._waiting: asyncio.Timeout | None = None  # bounds the wait for the client

    def go_away(self) -> None:
        """End the connection soon, keeping what it received (see :func:`ws_going_away`)."""
        self.leaving = True
        if self._waiting is not None:
            self._waiting.reschedule(self.loop.time())  # wakes :meth:`_wait` now

    def _interrupt(self) -> None:
        """A newer connection takes the upload over: drop this one. When the server is
        shutting down the connection is already ending by itself, with a close frame."""
        if not self.leaving:
            interrupter(self.request)()

    async def run(self) -> None:
        try:
            await self._serve()
        except ClientDisconnected as exc:
            self._log("WebSocket upload: %s", exc.message)
            # A client's close is answered only now that the upload is released, so a client
            # that reconnects once its close handshake is over never finds the upload locked.
            going_away = isinstance(exc, _IdleTimeout | _GoingAway)
            code = WSCloseCode.GOING_AWAY if going_away else CLOSE_NORMAL
            reason = GOING_AWAY_REASON if isinstance(exc, _GoingAway) else b""
            self._release_receiver()
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self.socket.close(code=code, message=reason)
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
        async with self.engine.writer(session.id, None, interrupt=self._interrupt) as writer:
            session = await self.engine.get(session.id)  # where the takeover left it
            window = self._window(opening, session)
            await self._send(self._ready(session, window))
            done = await self._receive_data(writer, window)
            await writer.commit()
        expected = _agreed_sha256(expected, done.sha256)
        await self._finish(await self.engine.finish(session.id, expected_sha256=expected))

    async def _receive_opening(self) -> Start | Resume:
        msg = await self._receive()
        if msg.type is not WSMsgType.TEXT:
            raise UnexpectedMessage('binary data before "start" or "resume"')
        message = parse_client_message(msg.data)
        if isinstance(message, Done):
            raise UnexpectedMessage('a connection opens with "start" or "resume"')
        if self.principal is None:
            given = (message.token or "").encode("utf-8", "surrogateescape") or None
            try:
                self.principal = await self.gate.identify(given)
            except Unauthorized:
                raise Unauthorized("a valid token is required (header or first message)") from None
        if self.pending is not None:
            self.pending.release()
        self.opened = True
        return message

    async def _open(self, opening: Start | Resume) -> UploadSession:
        principal = self.principal
        assert principal is not None  # proven by the opening
        if isinstance(opening, Resume):
            await check_visible(principal, self.engine.sessions, opening.id)
            if principal.read_only:
                raise UploadForbidden("this token is read-only: it may not upload")
            session = await self.engine.get(opening.id)
            if session.length is None:
                raise BadRequest("this upload has no declared length; WebSocket uploads need one")
            return session
        async with self.gate.creating(principal, opening.size):
            return await self.engine.create(
                length=opening.size,
                metadata=with_relative_path({"filename": opening.name}, opening.relative_path),
                declared_sha256=opening.sha256,  # kept for a resume on another connection
                client=request_client(self.request),
                owner=principal.owner,
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
            url=f"{self.files_path}{session.id}",
        )

    async def _receive_data(self, writer: UploadWriter, window: ReceiveWindow) -> Done:
        """Binary frames into the writer until ``done``; grants credit window by window.

        The receiver puts most frames into the writer itself and stops reading when a
        window is full; frames it leaves to aiohttp arrive here as messages.
        """
        receiver = self.receiver
        if receiver is not None:
            receiver.attach(writer, window)
        self._counted_to = writer.position
        incoming: asyncio.Future[WSMessage] | None = None
        try:
            while True:
                incoming = incoming or self._next_message()
                await self._wait(incoming)
                if receiver is not None and receiver.window_due:
                    await self._grant(writer, window)
                    receiver.window_granted()
                    continue
                msg = application_message(incoming.result())
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
                await drop_receive(incoming)
            if receiver is not None:
                await receiver.detach()
            self._count_received(writer)

    async def _grant(self, writer: UploadWriter, window: ReceiveWindow) -> None:
        await self._send(window.grant(await writer.checkpoint()))
        self._count_received(writer)

    def _count_received(self, writer: UploadWriter) -> None:
        """Metrics, a window at a time: counting every frame would cost on the hot path."""
        self._received(max(0, writer.position - self._counted_to))
        self._counted_to = max(self._counted_to, writer.position)

    async def _finish(self, session: UploadSession) -> None:
        url = f"{self.files_path}{session.id}"
        size = session.length or 0
        await self._send(Finished(id=session.id, url=url, sha256=session.sha256 or "", size=size))
        self._release_receiver()
        await self.socket.close(code=CLOSE_NORMAL)

    # the socket ---------------------------------------------------------------------------

    async def _receive(self) -> WSMessage:
        """The next text or binary message; a close, error or silence ends the upload."""
        incoming = self._next_message()
        try:
            await self._wait(incoming)
        finally:
            await drop_receive(incoming)
        return application_message(incoming.result())

    def _next_message(self) -> asyncio.Future[WSMessage]:
        if self.receiver is not None:
            self.receiver.next_message()
        return asyncio.ensure_future(self.socket.receive())

    async def _wait(self, incoming: asyncio.Future[WSMessage]) -> None:
        """Until ``incoming`` is done or a window is due; raises after a silence, and when
        the server shuts down (:meth:`go_away` wakes it).

        Silence is measured here, not by aiohttp's receive timeout, which every ping and
        pong restarts: a peer that only answers pings is idle.
        """
        receiver = self.receiver
        while True:
            if self.leaving:
                raise _GoingAway("the server is shutting down")
            if incoming.done() or (receiver is not None and receiver.window_due):
                break
            left = self._silence_left()
            if left <= 0:
                raise _IdleTimeout("the client sent no message for too long")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left) as self._waiting:
                    try:
                        if receiver is not None:
                            await receiver.wait(incoming)
                        else:
                            await asyncio.wait([incoming])
                    finally:
                        self._waiting = None
        if incoming.done():
            self.heard_at = self.loop.time()

    def _silence_left(self) -> float:
        now = self.loop.time()
        if not self.opened:
            return self.accepted_at + self.settings.auth_timeout - now
        heard = self.heard_at
        if self.receiver is not None:
            heard = max(heard, self.receiver.data_at)  # data frames it read itself
        return heard + self.settings.idle_timeout - now

    async def _send(self, message: Message) -> None:
        try:
            await self.socket.send_str(build_message(message))
        except ConnectionError as exc:
            raise ClientDisconnected("the connection ended while the server was answering") from exc
        # The client may take its time from here (e.g. after a credit that took long to make
        # durable), so silence is counted from now. Not before the opening: nothing is sent.
        self.heard_at = max(self.heard_at, self.loop.time())

    async def _fail(self, error: FreightError) -> None:
        """Report ``error`` and close with its code; quiet if the client is already gone."""
        self._log("WebSocket upload refused: %s (%s)", error.message, error.code)
        self._release_receiver()
        if self.socket.closed:
            return
        try:
            await self.socket.send_str(build_message(error_reply(error)))
            await self.socket.close(code=close_code_for(error), message=error.code.encode())
        except (ConnectionError, RuntimeError):
            pass

    def _log(self, text: str, *args: object) -> None:
        # Anyone may open and drop connections at will: only those that opened an upload
        # are worth a line at the default level.
        log.log(logging.INFO if self.opened else logging.DEBUG, text, *args)

    def _release_receiver(self) -> None:
        """Let every frame through to aiohttp from now on: its close handshake reads them."""
        if self.receiver is not None:
            self.receiver.release()


def _expected_sha256(opening: Start | Resume, session: UploadSession) -> str | None:
    """What ``start`` promised (kept in the session) and what this opening says."""
    return _agreed_sha256(session.declared_sha256, opening.sha256)


def _agreed_sha256(first: str | None, second: str | None) -> str | None:
    """One expected SHA-256 from two optional ones; two different ones can never match."""
    if first is not None and second is not None and first != second:
        raise ChecksumMismatch("the SHA-256 values given for this upload disagree")
    return second or first
