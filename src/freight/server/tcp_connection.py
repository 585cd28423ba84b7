"""The raw TCP transport's connection plumbing: one :class:`asyncio.BufferedProtocol` each.

:class:`ConnectionPlumbing` owns the asyncio side of a connection: the buffers handed to the
kernel (a small one for control frames and DATA headers, or the writer's own staging buffer
for a payload at the offset the upload expects), the frame decoder, pausing reading while
the handler holds it, and waiting for the next frame with the idle limit. The requests
themselves are served by :class:`~freight.server.tcp_handlers.TcpConnection`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, cast

from freight._types import Buffer
from freight.core import UploadEngine
from freight.core.users import ADMIN
from freight.errors import ClientDisconnected, FreightError
from freight.protocol.frame_decoder import FrameDecoder
from freight.protocol.frame_rules import (
    CLIENT_FRAMES,
    HEADER_SIZE,
    MAX_DATA_PAYLOAD,
    FrameError,
    IdleTimeout,
)
from freight.protocol.frame_types import ControlFrame, ErrorFrame, Frame
from freight.server.ingest import WriterFeed
from freight.server.principals import Gate
from freight.server.splice import SocketSplice, Splicers

MiB = 1024 * 1024
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


class ConnectionHost(Protocol):
    """What a connection needs from the server that accepted it."""

    engine: UploadEngine
    settings: TcpSettings
    gate: Gate
    splicers: Splicers | None
    on_received: ByteCounter
    on_sent: ByteCounter

    def track(self, connection: ConnectionPlumbing) -> None: ...

    def handshake_over(self, connection: ConnectionPlumbing) -> None: ...

    def forget(self, connection: ConnectionPlumbing) -> None: ...


class ConnectionPlumbing(asyncio.BufferedProtocol):
    """One client connection: the asyncio callbacks feed frames to :meth:`_serve`."""

    def __init__(self, server: ConnectionHost) -> None:
        self._server = server
        self._engine = server.engine
        self._settings = server.settings
        self._principal = ADMIN  # replaced by what HELLO's token stands for
        self._credential: bytes | None = None  # HELLO's token
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
        self._can_send = asyncio.Event()  # cleared while the transport's buffer is full
        self._can_send.set()

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

    def pause_writing(self) -> None:
        self._can_send.clear()

    def resume_writing(self) -> None:
        self._can_send.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self._can_send.set()  # a sender waiting for room finds the connection gone
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

    async def _serve(self) -> None:
        """Serve the connection until it ends; the subclass speaks the protocol."""
        raise NotImplementedError
