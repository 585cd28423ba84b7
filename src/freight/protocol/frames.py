"""Sans-IO codec of freight's raw TCP protocol, version 1 (specified in ``docs/protocol.md``).

Every frame is an 8-byte header (type, flags, reserved, body length; big-endian) and a body.
Control frames are small and parsed into frozen dataclasses; DATA frames carry an 8-byte
offset and a payload that is never copied: :class:`FrameDecoder` hands it back as
:class:`DataChunk` views of the buffer it was fed, so a transport can move payload bytes
from its own reused receive buffer straight to their destination.

Limits come first: a header's length field is checked against its frame type's bounds the
moment the 8 header bytes are in, before a single body byte is kept. The decoder's own
storage is one buffer of :data:`MAX_BUFFERED` bytes (a header plus the largest control body),
allocated once; whatever a peer sends, it never holds more.

Frames validate their fields when constructed, so the decoder and the encoders share one
set of rules and an invalid frame can be neither sent nor received.
"""

from __future__ import annotations

import enum
import re
import struct
from dataclasses import dataclass
from typing import ClassVar, TypeAlias

from freight._types import Buffer
from freight.errors import BadRequest, FreightError

__all__ = [
    "CLIENT_FRAMES",
    "DIGEST_SIZE",
    "FLAG_SHA256",
    "HEADER_SIZE",
    "MAGIC",
    "MAX_BUFFERED",
    "MAX_DATA_PAYLOAD",
    "MAX_ID",
    "MAX_MESSAGE",
    "MAX_NAME",
    "MAX_OFFSET",
    "MAX_TOKEN",
    "SERVER_FRAMES",
    "UNTIL_END",
    "VERSION",
    "Accepted",
    "Ack",
    "ControlFrame",
    "DataChunk",
    "Done",
    "ErrorFrame",
    "FileInfo",
    "Finished",
    "Frame",
    "FrameDecoder",
    "FrameError",
    "FrameTooLarge",
    "FrameType",
    "Get",
    "Hello",
    "IdleTimeout",
    "MalformedFrame",
    "Put",
    "Resume",
    "TruncatedStream",
    "UnexpectedFrame",
    "UnknownFrameType",
    "Welcome",
    "encode_data",
    "encode_data_header",
]

MAGIC = b"FRGT"
VERSION = 1
HEADER = struct.Struct(">BBHI")  # type, flags, reserved, body length
HEADER_SIZE = HEADER.size
DIGEST_SIZE = 32
MAX_TOKEN = 1024
MAX_NAME = 1024
MAX_ID = 128
MAX_CODE = 64
MAX_MESSAGE = 1024
MAX_DATA_PAYLOAD = 16 * 1024 * 1024
MAX_OFFSET = 2**63 - 1  # offsets and sizes fit a signed 64-bit off_t
UNTIL_END = 2**64 - 1  # GET length meaning "through the end of the file"
FLAG_SHA256 = 0x01  # PUT: the sha256 field holds the file's digest

_U16 = struct.Struct(">H")
_U64 = struct.Struct(">Q")
_ID = re.compile(rb"[A-Za-z0-9_-]{1,128}")
_CODE = re.compile(rb"ERR_[A-Z0-9_]{1,60}")
_NO_DIGEST = bytes(DIGEST_SIZE)


# errors ---------------------------------------------------------------------------------------


class FrameError(BadRequest):
    """The byte stream breaks the framing rules; the connection cannot go on."""

    code = "ERR_PROTOCOL"


class MalformedFrame(FrameError):
    """A frame's length or a field is outside what its type allows."""

    code = "ERR_MALFORMED_FRAME"


class UnknownFrameType(FrameError):
    code = "ERR_UNKNOWN_FRAME"


class UnexpectedFrame(FrameError):
    """A well-formed frame arrived in a direction or state where it has no meaning."""

    code = "ERR_UNEXPECTED_FRAME"


class FrameTooLarge(FrameError):
    code = "ERR_FRAME_TOO_LARGE"
    status = 413


class TruncatedStream(FrameError):
    """The stream ended in the middle of a frame."""

    code = "ERR_TRUNCATED"


class IdleTimeout(FreightError):
    """The peer sent nothing for longer than the idle limit."""

    code = "ERR_TIMEOUT"
    status = 408


# field checks ---------------------------------------------------------------------------------


def _check_offset(value: int, field: str) -> None:
    if not 0 <= value <= MAX_OFFSET:
        raise MalformedFrame(f"{field} {value} is outside 0..2^63-1")


def _check_digest(value: bytes, field: str = "sha256") -> None:
    if len(value) != DIGEST_SIZE:
        raise MalformedFrame(f"{field} must be {DIGEST_SIZE} bytes, not {len(value)}")


def _check_id(value: str) -> bytes:
    raw = value.encode("ascii", "replace")
    if not _ID.fullmatch(raw):
        raise MalformedFrame("an id is 1-128 characters of A-Z a-z 0-9 _ -")
    return raw


def _check_text(value: str, limit: int, field: str) -> bytes:
    try:
        raw = value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise MalformedFrame(f"{field} cannot be encoded as UTF-8") from exc
    if len(raw) > limit:
        raise FrameTooLarge(f"{field} is {len(raw)} bytes; at most {limit} are allowed")
    if "\x00" in value:
        raise MalformedFrame(f"{field} contains a NUL character")
    return raw


def _decode_text(raw: bytes, field: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedFrame(f"{field} is not valid UTF-8") from exc


def _decode_id(raw: bytes) -> str:
    if not _ID.fullmatch(raw):
        raise MalformedFrame("an id is 1-128 characters of A-Z a-z 0-9 _ -")
    return raw.decode("ascii")


def _pack(frame_type: FrameType, body: bytes, flags: int = 0) -> bytes:
    return HEADER.pack(frame_type, flags, 0, len(body)) + body


# frames ---------------------------------------------------------------------------------------


class FrameType(enum.IntEnum):
    HELLO = 0x01
    WELCOME = 0x02
    PUT = 0x03
    RESUME = 0x04
    GET = 0x05
    ACCEPTED = 0x06
    DATA = 0x07
    ACK = 0x08
    DONE = 0x09
    FINISHED = 0x0A
    FILE = 0x0B
    ERROR = 0x0C


# Smallest and largest body per type; DATA's upper bound is the receiver's max_data + 8.
BODY_LIMITS: dict[FrameType, tuple[int, int]] = {
    FrameType.HELLO: (6, 6 + MAX_TOKEN),
    FrameType.WELCOME: (12, 12),
    FrameType.PUT: (40, 40 + MAX_NAME),
    FrameType.RESUME: (1, MAX_ID),
    FrameType.GET: (17, 16 + MAX_ID),
    FrameType.ACCEPTED: (17, 16 + MAX_ID),
    FrameType.DATA: (9, 8 + MAX_DATA_PAYLOAD),
    FrameType.ACK: (8, 8),
    FrameType.DONE: (32, 32),
    FrameType.FINISHED: (41, 40 + MAX_ID),
    FrameType.FILE: (56, 56 + MAX_NAME),
    FrameType.ERROR: (10, 9 + MAX_CODE + MAX_MESSAGE),
}
ALLOWED_FLAGS: dict[FrameType, int] = {FrameType.PUT: FLAG_SHA256}
MAX_CONTROL_BODY = max(high for kind, (_, high) in BODY_LIMITS.items() if kind != FrameType.DATA)
MAX_BUFFERED = HEADER_SIZE + MAX_CONTROL_BODY
"""The most the decoder ever stores: one header and the largest control body."""

CLIENT_FRAMES = frozenset(
    {
        FrameType.HELLO,
        FrameType.PUT,
        FrameType.RESUME,
        FrameType.GET,
        FrameType.DATA,
        FrameType.DONE,
        FrameType.ERROR,
    }
)
SERVER_FRAMES = frozenset(
    {
        FrameType.WELCOME,
        FrameType.ACCEPTED,
        FrameType.DATA,
        FrameType.ACK,
        FrameType.FINISHED,
        FrameType.FILE,
        FrameType.ERROR,
    }
)


@dataclass(frozen=True)
class Hello:
    """Client, first frame: magic, protocol version and the token (empty: none)."""

    TYPE: ClassVar[FrameType] = FrameType.HELLO
    version: int = VERSION
    token: bytes = b""

    def __post_init__(self) -> None:
        if not 0 <= self.version <= 0xFFFF:
            raise MalformedFrame("the version is a 16-bit number")
        if len(self.token) > MAX_TOKEN:
            raise FrameTooLarge(f"the token is longer than {MAX_TOKEN} bytes")

    def encode(self) -> bytes:
        return _pack(self.TYPE, MAGIC + _U16.pack(self.version) + self.token)

    @classmethod
    def decode(cls, flags: int, body: bytes) -> Hello:
        if body[:4] != MAGIC:
            raise MalformedFrame("HELLO does not start with the magic FRGT: not a freight client")
        return cls(_U16.unpack_from(body, 4)[0], body[6:])


_WELCOME = struct.Struct(">HHII")


@dataclass(frozen=True)
class Welcome:
    """Server's answer to HELLO: version, window (ACK interval, bytes) and DATA payload cap."""

    TYPE: ClassVar[FrameType] = FrameType.WELCOME
    window: int
    max_data: int
    version: int = VERSION

    def __post_init__(self) -> None:
        if not 1 <= self.window <= 0xFFFFFFFF:
            raise MalformedFrame("the window is 1..2^32-1 bytes")
        if not 1 <= self.max_data <= MAX_DATA_PAYLOAD:
            raise MalformedFrame(f"max_data is 1..{MAX_DATA_PAYLOAD} bytes")

    def encode(self) -> bytes:
        return _pack(self.TYPE, _WELCOME.pack(self.version, 0, self.window, self.max_data))

    @classmethod
    def decode(cls, flags: int, body: bytes) -> Welcome:
        version, reserved, window, max_data = _WELCOME.unpack(body)
        if reserved:
            raise MalformedFrame("WELCOME's reserved field must be zero")
        return cls(window, max_data, version)


_PUT = struct.Struct(">Q32s")


@dataclass(frozen=True)
class Put:
    """Client: start a new upload of ``size`` bytes; ``sha256`` (raw) if known up front."""

    TYPE: ClassVar[FrameType] = FrameType.PUT
    size: int
    name: str = ""
    sha256: bytes | None = None

    def __post_init__(self) -> None:
        _check_offset(self.size, "size")
        _check_text(self.name, MAX_NAME, "the name")
        if self.sha256 is not None:
            _check_digest(self.sha256)

    def encode(self) -> bytes:
        flags = FLAG_SHA256 if self.sha256 is not None else 0
        body = _PUT.pack(self.size, self.sha256 or _NO_DIGEST)
        return _pack(self.TYPE, body + _check_text(self.name, MAX_NAME, "the name"), flags)

    @classmethod
    def decode(cls, flags: int, body: bytes) -> Put:
        size, digest = _PUT.unpack_from(body)
        if not flags & FLAG_SHA256 and digest != _NO_DIGEST:
            raise MalformedFrame("PUT without the sha256 flag must carry a zero digest")
        name = _decode_text(body[_PUT.size :], "the name")
        return cls(size, name, digest if flags & FLAG_SHA256 else None)


@dataclass(frozen=True)
class Resume:
    """Client: continue the upload ``upload_id`` where the server's durable copy ends."""

    TYPE: ClassVar[FrameType] = FrameType.RESUME
    upload_id: str

    def __post_init__(self) -> None:
        _check_id(self.upload_id)

    def encode(self) -> bytes:
        return _pack(self.TYPE, _check_id(self.upload_id))

    @classmethod
    def decode(cls, flags: int, body: bytes) -> Resume:
        return cls(_decode_id(body))


_RANGE = struct.Struct(">QQ")


@dataclass(frozen=True)
class Get:
    """Client: send ``length`` bytes (None: all) of a finished file from ``offset``."""

    TYPE: ClassVar[FrameType] = FrameType.GET
    upload_id: str
    offset: int = 0
    length: int | None = None

    def __post_init__(self) -> None:
        _check_id(self.upload_id)
        _check_offset(self.offset, "offset")
        if self.length is not None:
            _check_offset(self.length, "length")

    def encode(self) -> bytes:
        length = UNTIL_END if self.length is None else self.length
        return _pack(self.TYPE, _RANGE.pack(self.offset, length) + _check_id(self.upload_id))

    @classmethod
    def decode(cls, flags: int, body: bytes) -> Get:
        offset, length = _RANGE.unpack_from(body)
        upload_id = _decode_id(body[_RANGE.size :])
        return cls(upload_id, offset, None if length == UNTIL_END else length)


@dataclass(frozen=True)
class Accepted:
    """Server's answer to PUT or RESUME: send DATA from ``offset`` (bytes before are durable)."""

    TYPE: ClassVar[FrameType] = FrameType.ACCEPTED
    upload_id: str
    offset: int
    size: int

    def __post_init__(self) -> None:
        _check_id(self.upload_id)
        _check_offset(self.size, "size")
        _check_offset(self.offset, "offset")
        if self.offset > self.size:
            raise MalformedFrame("the offset is past the size")

    def encode(self) -> bytes:
        return _pack(self.TYPE, _RANGE.pack(self.offset, self.size) + _check_id(self.upload_id))

    @classmethod
    def decode(cls, flags: int, body: bytes) -> Accepted:
        offset, size = _RANGE.unpack_from(body)
        return cls(_decode_id(body[_RANGE.size :]), offset, size)


@dataclass(frozen=True)
class Ack:
    """Server: every byte before ``offset`` is durable and recorded."""

    TYPE: ClassVar[FrameType] = FrameType.ACK
    offset: int

    def __post_init__(self) -> None:
        _check_offset(self.offset, "offset")

    def encode(self) -> bytes:
        return _pack(self.TYPE, _U64.pack(self.offset))

    @classmethod
    def decode(cls, flags: int, body: bytes) -> Ack:
        return cls(_U64.unpack(body)[0])


@dataclass(frozen=True)
class Done:
    """Client: all DATA is sent; ``sha256`` (raw) is the whole file's digest."""

    TYPE: ClassVar[FrameType] = FrameType.DONE
    sha256: bytes

    def __post_init__(self) -> None:
        _check_digest(self.sha256)

    def encode(self) -> bytes:
        return _pack(self.TYPE, self.sha256)

    @classmethod
    def decode(cls, flags: int, body: bytes) -> Done:
        return cls(body)


_FINISHED = struct.Struct(">Q32s")


@dataclass(frozen=True)
class Finished:
    """Server: the upload is a stored file with this size and SHA-256."""

    TYPE: ClassVar[FrameType] = FrameType.FINISHED
    upload_id: str
    size: int
    sha256: bytes

    def __post_init__(self) -> None:
        _check_id(self.upload_id)
        _check_offset(self.size, "size")
        _check_digest(self.sha256)

    def encode(self) -> bytes:
        body = _FINISHED.pack(self.size, self.sha256) + _check_id(self.upload_id)
        return _pack(self.TYPE, body)

    @classmethod
    def decode(cls, flags: int, body: bytes) -> Finished:
        size, digest = _FINISHED.unpack_from(body)
        return cls(_decode_id(body[_FINISHED.size :]), size, digest)


_FILE = struct.Struct(">QQQ32s")


@dataclass(frozen=True)
class FileInfo:
    """Server's answer to GET: which file (size, SHA-256, name) and which bytes follow."""

    TYPE: ClassVar[FrameType] = FrameType.FILE
    size: int
    offset: int
    length: int
    sha256: bytes
    name: str = ""

    def __post_init__(self) -> None:
        for field, value in (("size", self.size), ("offset", self.offset), ("length", self.length)):
            _check_offset(value, field)
        if self.offset + self.length > self.size:
            raise MalformedFrame("the range runs past the end of the file")
        _check_digest(self.sha256)
        _check_text(self.name, MAX_NAME, "the name")

    def encode(self) -> bytes:
        body = _FILE.pack(self.size, self.offset, self.length, self.sha256)
        return _pack(self.TYPE, body + _check_text(self.name, MAX_NAME, "the name"))

    @classmethod
    def decode(cls, flags: int, body: bytes) -> FileInfo:
        size, offset, length, digest = _FILE.unpack_from(body)
        return cls(size, offset, length, digest, _decode_text(body[_FILE.size :], "the name"))


_ERROR = struct.Struct(">QB")


@dataclass(frozen=True)
class ErrorFrame:
    """Either side: a stable error ``code``, a message, and a code-specific number."""

    TYPE: ClassVar[FrameType] = FrameType.ERROR
    code: str
    message: str = ""
    detail: int = 0

    def __post_init__(self) -> None:
        if not _CODE.fullmatch(self.code.encode("ascii", "replace")):
            raise MalformedFrame("an error code is ERR_ and 1-60 of A-Z 0-9 _")
        _check_text(self.message, MAX_MESSAGE, "the message")
        if not 0 <= self.detail < 2**64:
            raise MalformedFrame("the detail is an unsigned 64-bit number")

    def encode(self) -> bytes:
        code = self.code.encode("ascii")
        message = _check_text(self.message, MAX_MESSAGE, "the message")
        return _pack(self.TYPE, _ERROR.pack(self.detail, len(code)) + code + message)

    @classmethod
    def decode(cls, flags: int, body: bytes) -> ErrorFrame:
        detail, code_length = _ERROR.unpack_from(body)
        code = body[_ERROR.size : _ERROR.size + code_length]
        if len(code) != code_length or not _CODE.fullmatch(code):
            raise MalformedFrame("an error code is ERR_ and 1-60 of A-Z 0-9 _")
        message = _decode_text(body[_ERROR.size + code_length :], "the message")
        return cls(code.decode("ascii"), message, detail)


@dataclass(frozen=True, eq=False)
class DataChunk:
    """Payload bytes found at ``offset``: a view of the fed buffer, valid until it is reused.

    One DATA frame may arrive as several chunks (one per ``feed`` it spans).
    """

    offset: int
    data: memoryview

    @property
    def end(self) -> int:
        return self.offset + self.data.nbytes


ControlFrame: TypeAlias = (
    Hello | Welcome | Put | Resume | Get | Accepted | Ack | Done | Finished | FileInfo | ErrorFrame
)
Frame: TypeAlias = ControlFrame | DataChunk
_CONTROL_TYPES: tuple[type[ControlFrame], ...] = (
    Hello,
    Welcome,
    Put,
    Resume,
    Get,
    Accepted,
    Ack,
    Done,
    Finished,
    FileInfo,
    ErrorFrame,
)
_DECODERS = {kind.TYPE: kind.decode for kind in _CONTROL_TYPES}


def encode_data_header(offset: int, length: int) -> bytes:
    """The 16 bytes that precede ``length`` payload bytes found at ``offset``."""
    _check_offset(offset, "offset")
    if not 1 <= length <= MAX_DATA_PAYLOAD:
        raise FrameTooLarge(f"a DATA payload is 1..{MAX_DATA_PAYLOAD} bytes, not {length}")
    if offset + length > MAX_OFFSET:
        raise MalformedFrame("the payload runs past offset 2^63-1")
    return HEADER.pack(FrameType.DATA, 0, 0, 8 + length) + _U64.pack(offset)


def encode_data(offset: int, payload: Buffer) -> bytes:
    """A whole DATA frame (tests and small payloads; large ones send the header, then the file)."""
    return encode_data_header(offset, memoryview(payload).nbytes) + bytes(payload)


# decoding -------------------------------------------------------------------------------------


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
            frames.append(_DECODERS[self._type](self._flags, body))
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
        offset, size = _U64.unpack(body)[0], self._payload_size
        _check_offset(offset, "the DATA offset")
        if offset + size > MAX_OFFSET:
            raise MalformedFrame("the DATA payload runs past offset 2^63-1")
        self._payload_offset, self._payload_left = offset, size
