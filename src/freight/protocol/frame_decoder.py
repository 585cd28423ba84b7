"""The raw TCP protocol's incremental decoder: bytes in as they arrive, whole frames out.

Limits come first: a header's length field is checked against its frame type's bounds the
moment the 8 header bytes are in, before a single body byte is kept. The decoder's own
storage is one buffer of :data:`~freight.protocol.frame_rules.MAX_BUFFERED` bytes, allocated
once; DATA payload is handed back as :class:`~freight.protocol.frame_types.DataChunk` views of
the fed buffer, never copied.
"""

from __future__ import annotations

from freight._types import Buffer
from freight.protocol.frame_rules import (
    ALLOWED_FLAGS,
    BODY_LIMITS,
    HEADER,
    HEADER_SIZE,
    MAX_BUFFERED,
    MAX_DATA_PAYLOAD,
    MAX_OFFSET,
    U64,
    FrameError,
    FrameTooLarge,
    FrameType,
    MalformedFrame,
    TruncatedStream,
    UnexpectedFrame,
    UnknownFrameType,
    check_offset,
)
from freight.protocol.frame_types import DECODERS, DataChunk, Frame


class FrameDecoder:
    """Incremental decoder: ``feed`` bytes as they arrive, get whole frames back.

    ``accept`` is the set of frame types the peer may send (:data:`CLIENT_FRAMES` on a
    server); ``max_data`` bounds DATA payloads. After a :class:`FrameError` the decoder stays
    failed: the stream has lost its framing and the connection must end.
    """

    def __init__(self, accept: frozenset[FrameType], *, max_data: int = MAX_DATA_PAYLOAD) -> None:
        if not 1 <= max_data <= MAX_DATA_PAYLOAD:
            raise ValueError(f"max_data must be 1..{MAX_DATA_PAYLOAD}")
        self._accept = accept
        self._max_data = max_data
        self._scratch = bytearray(MAX_BUFFERED)  # allocated once, never grows
        self._fill = 0
        self._need = HEADER_SIZE  # bytes ``_scratch`` must hold to finish the current part
        self._type: FrameType | None = None  # None while a header is being read
        self._flags = 0
        self._payload_size = 0  # of the DATA frame whose offset is being read
        self._payload_left = 0
        self._payload_offset = 0
        self._failed: FrameError | None = None

    @property
    def buffered(self) -> int:
        """Bytes of an unfinished header or control body held right now."""
        return self._fill

    @property
    def capacity(self) -> int:
        """Size of the decoder's only buffer: :data:`MAX_BUFFERED`."""
        return len(self._scratch)

    @property
    def at_boundary(self) -> bool:
        """True when the bytes fed so far end exactly after a frame."""
        return self._fill == 0 and self._payload_left == 0 and self._failed is None

    @property
    def payload_left(self) -> int:
        """Bytes of the current DATA frame's payload not yet fed (0 between payloads)."""
        return self._payload_left

    @property
    def payload_offset(self) -> int:
        """The upload offset the next payload byte belongs at."""
        return self._payload_offset

    def skip_payload(self, nbytes: int) -> None:
        """Count ``nbytes`` of the current payload that the caller read somewhere else.

        A receiver may read a payload straight into its own buffer (``recv_into`` its
        destination) instead of feeding it here; the decoder then only keeps its place.
        """
        if not 0 <= nbytes <= self._payload_left:
            raise ValueError(f"{nbytes} bytes; the payload has {self._payload_left} left")
        self._payload_offset += nbytes
        self._payload_left -= nbytes

    def feed(self, data: Buffer) -> list[Frame]:
        """Decode ``data``; DATA payload in the result points into ``data`` (no copy)."""
        if self._failed is not None:
            raise self._failed
        frames: list[Frame] = []
        try:
            self._consume(memoryview(data).cast("B"), frames)
        except FrameError as exc:
            self._failed = exc
            raise
        return frames

    def eof(self) -> None:
        """The peer closed the stream: raise :class:`TruncatedStream` if it did so mid-frame."""
        if not self.at_boundary and self._failed is None:
            self._failed = TruncatedStream("the connection ended in the middle of a frame")
            raise self._failed

    def _consume(self, view: memoryview, frames: list[Frame]) -> None:
        position, end = 0, view.nbytes
        while position < end:
            if self._payload_left:
                take = min(self._payload_left, end - position)
                frames.append(DataChunk(self._payload_offset, view[position : position + take]))
                self._payload_offset += take
                self._payload_left -= take
                position += take
                continue
            take = min(self._need - self._fill, end - position)
            self._scratch[self._fill : self._fill + take] = view[position : position + take]
            self._fill += take
            position += take
            if self._fill == self._need:
                self._complete(frames)

    def _complete(self, frames: list[Frame]) -> None:
        if self._type is None:
            self._start_frame()
            return
        body = bytes(self._scratch[HEADER_SIZE : self._need])
        if self._type is FrameType.DATA:
            self._start_payload(body)
        else:
            frames.append(DECODERS[self._type](self._flags, body))
        self._type, self._fill, self._need = None, 0, HEADER_SIZE

    def _start_frame(self) -> None:
        """Check a complete header before keeping anything of the body."""
        raw_type, flags, reserved, length = HEADER.unpack_from(self._scratch)
        try:
            frame_type = FrameType(raw_type)
        except ValueError:
            raise UnknownFrameType(f"unknown frame type 0x{raw_type:02x}") from None
        if frame_type not in self._accept:
            raise UnexpectedFrame(f"{frame_type.name} is never sent in this direction")
        if reserved:
            raise MalformedFrame("the header's reserved field must be zero")
        if flags & ~ALLOWED_FLAGS.get(frame_type, 0):
            raise MalformedFrame(f"unknown flags 0x{flags:02x} on {frame_type.name}")
        low, high = BODY_LIMITS[frame_type]
        if frame_type is FrameType.DATA:
            high = 8 + self._max_data
        if length > high:
            raise FrameTooLarge(f"a {frame_type.name} body of {length} bytes; at most {high}")
        if length < low:
            raise MalformedFrame(f"a {frame_type.name} body of {length} bytes; at least {low}")
        self._type, self._flags = frame_type, flags
        if frame_type is FrameType.DATA:
            self._payload_size, length = length - 8, 8
        self._need = HEADER_SIZE + length

    def _start_payload(self, body: bytes) -> None:
        offset, size = U64.unpack(body)[0], self._payload_size
        check_offset(offset, "the DATA offset")
        if offset + size > MAX_OFFSET:
            raise MalformedFrame("the DATA payload runs past offset 2^63-1")
        self._payload_offset, self._payload_left = offset, size
