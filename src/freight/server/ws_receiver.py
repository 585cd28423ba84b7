"""Reading a WebSocket upload's binary frames straight off the socket (see :mod:`.ws`).

Right after the handshake a :class:`Receiver` takes the connection's transport over from
aiohttp (plain sockets; TLS stays with aiohttp). It reads frame headers itself; once the
upload is open, the payload of each binary frame is read into one reused frame buffer,
unmasked there by aiohttp's C helper and copied into the writer's staging buffer. Every
other frame goes to aiohttp as it arrived, so aiohttp's parser, its checks and its close
handshake still see them.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from typing import Any

from aiohttp import web

from freight.core import UploadWriter
from freight.errors import ClientDisconnected, FreightError
from freight.protocol.ws_frame_header import (
    MAX_FRAME_HEADER,
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PONG,
    OP_TEXT,
    FrameHeader,
    parse_frame_header,
)
from freight.protocol.ws_message_types import (
    MAX_CONTROL_SIZE,
    CreditExceeded,
    FrameTooLarge,
    InvalidMessage,
    UnexpectedMessage,
)
from freight.protocol.ws_rules import ReceiveWindow

try:  # aiohttp's C helper, 8 bytes at a time; its module is private, hence the way out
    from aiohttp._websocket.helpers import websocket_mask as unmask
except ImportError:  # pragma: no cover - another aiohttp layout
    from freight.protocol.ws_frame_header import apply_mask as unmask

__all__ = ["Receiver"]

log = logging.getLogger(__name__)


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
# Until an upload is attached only control messages (at most MAX_CONTROL_SIZE) are read:
# a connection that never gets that far (no token, silent) holds no more than this.
_OPENING_READ_SIZE = 4 * 1024
_DATA_OPCODES = (OP_CONTINUATION, OP_TEXT, OP_BINARY)


class Receiver(asyncio.BufferedProtocol):
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
        self._read_buffer = memoryview(bytearray(_OPENING_READ_SIZE))
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
        self._message_opcode = OP_TEXT  # the first frame's opcode of the message forwarded
        self._message_size = 0  # its payload bytes so far
        self._stash = bytearray()  # bytes read while holding, decoded once released
        self._holds: set[str] = set()
        self._free = False  # no upload attached any more: never hold for messages
        self._writer: UploadWriter | None = None
        self._window: ReceiveWindow | None = None
        self._staged = 0  # bytes of the frame buffer copied into the writer
        self._room: asyncio.Task[None] | None = None  # waiting for a staging buffer
        self._wakeup: asyncio.Future[None] | None = None
        self._alive_at = 0.0
        self._data_read = False
        self.data_at = 0.0  # when bytes of a text or binary frame were last read
        self.failure: FreightError | None = None

    @classmethod
    def take_over(cls, request: web.Request, *, alive_every: float) -> Receiver | None:
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
        if self._read_buffer.nbytes < _READ_SIZE:
            self._read_buffer = memoryview(bytearray(_READ_SIZE))

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
        if self._data_read:
            self._data_read = False
            self.data_at = self._loop.time()
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
                if self._mode is not _Mode.FORWARD or _carries_data(self._current):
                    self._data_read = True
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
                self._refuse(exc)
            else:
                self._mode, self._mask, self._frame_fill = _Mode.DATA, header.mask, 0
                if len(self._frame) != header.length:
                    self._frame = bytearray(header.length)
        elif (refusal := self._refusal(header)) is not None:
            self._refuse(refusal)
        else:
            self._mode = _Mode.FORWARD
            self._aiohttp.data_received(bytes(raw))
            if header.opcode in _DATA_OPCODES:
                self._fragmented = not header.fin
        if not self._left:
            self._end_frame()

    def _refusal(self, header: FrameHeader) -> FreightError | None:
        """Why a frame for aiohttp is refused from its header, before aiohttp buffers it.

        aiohttp would gather any message up to ``max_frame`` (256 KiB): a control message
        holds at most MAX_CONTROL_SIZE, and binary data before the upload is open is an
        error whatever its size. Once the upload is over (``_free``) aiohttp's limit rules.
        """
        if header.opcode not in _DATA_OPCODES or self._free:
            return None
        if header.opcode != OP_CONTINUATION:
            self._message_opcode, self._message_size = header.opcode, 0
        self._message_size += header.length
        if self._message_opcode == OP_BINARY:
            if self._window is not None:
                return None  # a fragmented data message: aiohttp assembles it, within its limit
            return UnexpectedMessage('binary data before "start" or "resume"')
        if self._message_size > MAX_CONTROL_SIZE:
            return InvalidMessage(
                f"a control message may hold at most {MAX_CONTROL_SIZE} bytes", field="op"
            )
        return None

    def _refuse(self, error: FreightError) -> None:
        self._fail(error)
        self._mode = _Mode.SKIP

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
            self._staged += writer.write_nowait(frame[self._staged :])
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


def _carries_data(header: FrameHeader | None) -> bool:
    return header is not None and header.opcode in _DATA_OPCODES


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
