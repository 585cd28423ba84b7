"""The raw TCP protocol's frames: one frozen dataclass per control frame, and DATA encoding.

Each control frame validates its fields when constructed and knows its own ``encode`` and
``decode``; :class:`DataChunk` is the decoder's zero-copy view of DATA payload bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar, TypeAlias

from freight._types import Buffer
from freight.protocol.frame_rules import (
    CODE_PATTERN,
    FLAG_PATH,
    FLAG_SHA256,
    HEADER,
    MAGIC,
    MAX_DATA_PAYLOAD,
    MAX_MESSAGE,
    MAX_NAME,
    MAX_OFFSET,
    MAX_TOKEN,
    NO_DIGEST,
    U16,
    U64,
    UNTIL_END,
    VERSION,
    FrameTooLarge,
    FrameType,
    MalformedFrame,
    check_digest,
    check_id,
    check_offset,
    check_text,
    decode_id,
    decode_text,
    pack,
)
from freight.protocol.metadata import relative_path_problem


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
        return pack(self.TYPE, MAGIC + U16.pack(self.version) + self.token)

    @classmethod
    def decode(cls, flags: int, body: bytes) -> Hello:
        if body[:4] != MAGIC:
            raise MalformedFrame("HELLO does not start with the magic FRGT: not a freight client")
        return cls(U16.unpack_from(body, 4)[0], body[6:])


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
        return pack(self.TYPE, _WELCOME.pack(self.version, 0, self.window, self.max_data))

    @classmethod
    def decode(cls, flags: int, body: bytes) -> Welcome:
        version, reserved, window, max_data = _WELCOME.unpack(body)
        if reserved:
            raise MalformedFrame("WELCOME's reserved field must be zero")
        return cls(window, max_data, version)


_PUT = struct.Struct(">Q32s")


@dataclass(frozen=True)
class Put:
    """Client: start a new upload of ``size`` bytes; ``sha256`` (raw) if known up front.

    With ``is_path`` the name is the file's path in the folder sent (``photos/a.jpg``, kept
    as ``relativePath``), checked like every protocol's (no absolute path, no ``..``).
    """

    TYPE: ClassVar[FrameType] = FrameType.PUT
    size: int
    name: str = ""
    sha256: bytes | None = None
    is_path: bool = False

    def __post_init__(self) -> None:
        check_offset(self.size, "size")
        check_text(self.name, MAX_NAME, "the name")
        if self.sha256 is not None:
            check_digest(self.sha256)
        if self.is_path and (problem := relative_path_problem(self.name)) is not None:
            raise MalformedFrame(f"the path is refused: {problem}")

    def encode(self) -> bytes:
        flags = (FLAG_SHA256 if self.sha256 is not None else 0) | (FLAG_PATH if self.is_path else 0)
        body = _PUT.pack(self.size, self.sha256 or NO_DIGEST)
        return pack(self.TYPE, body + check_text(self.name, MAX_NAME, "the name"), flags)

    @classmethod
    def decode(cls, flags: int, body: bytes) -> Put:
        size, digest = _PUT.unpack_from(body)
        if not flags & FLAG_SHA256 and digest != NO_DIGEST:
            raise MalformedFrame("PUT without the sha256 flag must carry a zero digest")
        name = decode_text(body[_PUT.size :], "the name")
        return cls(size, name, digest if flags & FLAG_SHA256 else None, bool(flags & FLAG_PATH))


@dataclass(frozen=True)
class Resume:
    """Client: continue the upload ``upload_id`` where the server's durable copy ends."""

    TYPE: ClassVar[FrameType] = FrameType.RESUME
    upload_id: str

    def __post_init__(self) -> None:
        check_id(self.upload_id)

    def encode(self) -> bytes:
        return pack(self.TYPE, check_id(self.upload_id))

    @classmethod
    def decode(cls, flags: int, body: bytes) -> Resume:
        return cls(decode_id(body))


_RANGE = struct.Struct(">QQ")


@dataclass(frozen=True)
class Get:
    """Client: send ``length`` bytes (None: all) of a finished file from ``offset``."""

    TYPE: ClassVar[FrameType] = FrameType.GET
    upload_id: str
    offset: int = 0
    length: int | None = None

    def __post_init__(self) -> None:
        check_id(self.upload_id)
        check_offset(self.offset, "offset")
        if self.length is not None:
            check_offset(self.length, "length")

    def encode(self) -> bytes:
        length = UNTIL_END if self.length is None else self.length
        return pack(self.TYPE, _RANGE.pack(self.offset, length) + check_id(self.upload_id))

    @classmethod
    def decode(cls, flags: int, body: bytes) -> Get:
        offset, length = _RANGE.unpack_from(body)
        upload_id = decode_id(body[_RANGE.size :])
        return cls(upload_id, offset, None if length == UNTIL_END else length)


@dataclass(frozen=True)
class Accepted:
    """Server's answer to PUT or RESUME: send DATA from ``offset`` (bytes before are durable)."""

    TYPE: ClassVar[FrameType] = FrameType.ACCEPTED
    upload_id: str
    offset: int
    size: int

    def __post_init__(self) -> None:
        check_id(self.upload_id)
        check_offset(self.size, "size")
        check_offset(self.offset, "offset")
        if self.offset > self.size:
            raise MalformedFrame("the offset is past the size")

    def encode(self) -> bytes:
        return pack(self.TYPE, _RANGE.pack(self.offset, self.size) + check_id(self.upload_id))

    @classmethod
    def decode(cls, flags: int, body: bytes) -> Accepted:
        offset, size = _RANGE.unpack_from(body)
        return cls(decode_id(body[_RANGE.size :]), offset, size)


@dataclass(frozen=True)
class Ack:
    """Server: every byte before ``offset`` is durable and recorded."""

    TYPE: ClassVar[FrameType] = FrameType.ACK
    offset: int

    def __post_init__(self) -> None:
        check_offset(self.offset, "offset")

    def encode(self) -> bytes:
        return pack(self.TYPE, U64.pack(self.offset))

    @classmethod
    def decode(cls, flags: int, body: bytes) -> Ack:
        return cls(U64.unpack(body)[0])


@dataclass(frozen=True)
class Done:
    """Client: all DATA is sent; ``sha256`` (raw) is the whole file's digest."""

    TYPE: ClassVar[FrameType] = FrameType.DONE
    sha256: bytes

    def __post_init__(self) -> None:
        check_digest(self.sha256)

    def encode(self) -> bytes:
        return pack(self.TYPE, self.sha256)

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
        check_id(self.upload_id)
        check_offset(self.size, "size")
        check_digest(self.sha256)

    def encode(self) -> bytes:
        body = _FINISHED.pack(self.size, self.sha256) + check_id(self.upload_id)
        return pack(self.TYPE, body)

    @classmethod
    def decode(cls, flags: int, body: bytes) -> Finished:
        size, digest = _FINISHED.unpack_from(body)
        return cls(decode_id(body[_FINISHED.size :]), size, digest)


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
            check_offset(value, field)
        if self.offset + self.length > self.size:
            raise MalformedFrame("the range runs past the end of the file")
        check_digest(self.sha256)
        check_text(self.name, MAX_NAME, "the name")

    def encode(self) -> bytes:
        body = _FILE.pack(self.size, self.offset, self.length, self.sha256)
        return pack(self.TYPE, body + check_text(self.name, MAX_NAME, "the name"))

    @classmethod
    def decode(cls, flags: int, body: bytes) -> FileInfo:
        size, offset, length, digest = _FILE.unpack_from(body)
        return cls(size, offset, length, digest, decode_text(body[_FILE.size :], "the name"))


_ERROR = struct.Struct(">QB")


@dataclass(frozen=True)
class ErrorFrame:
    """Either side: a stable error ``code``, a message, and a code-specific number."""

    TYPE: ClassVar[FrameType] = FrameType.ERROR
    code: str
    message: str = ""
    detail: int = 0

    def __post_init__(self) -> None:
        if not CODE_PATTERN.fullmatch(self.code.encode("ascii", "replace")):
            raise MalformedFrame("an error code is ERR_ and 1-60 of A-Z 0-9 _")
        check_text(self.message, MAX_MESSAGE, "the message")
        if not 0 <= self.detail < 2**64:
            raise MalformedFrame("the detail is an unsigned 64-bit number")

    def encode(self) -> bytes:
        code = self.code.encode("ascii")
        message = check_text(self.message, MAX_MESSAGE, "the message")
        return pack(self.TYPE, _ERROR.pack(self.detail, len(code)) + code + message)

    @classmethod
    def decode(cls, flags: int, body: bytes) -> ErrorFrame:
        detail, code_length = _ERROR.unpack_from(body)
        code = body[_ERROR.size : _ERROR.size + code_length]
        if len(code) != code_length or not CODE_PATTERN.fullmatch(code):
            raise MalformedFrame("an error code is ERR_ and 1-60 of A-Z 0-9 _")
        message = decode_text(body[_ERROR.size + code_length :], "the message")
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
CONTROL_TYPES: tuple[type[ControlFrame], ...] = (
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
DECODERS = {kind.TYPE: kind.decode for kind in CONTROL_TYPES}


def encode_data_header(offset: int, length: int) -> bytes:
    """The 16 bytes that precede ``length`` payload bytes found at ``offset``."""
    check_offset(offset, "offset")
    if not 1 <= length <= MAX_DATA_PAYLOAD:
        raise FrameTooLarge(f"a DATA payload is 1..{MAX_DATA_PAYLOAD} bytes, not {length}")
    if offset + length > MAX_OFFSET:
        raise MalformedFrame("the payload runs past offset 2^63-1")
    return HEADER.pack(FrameType.DATA, 0, 0, 8 + length) + U64.pack(offset)


def encode_data(offset: int, payload: Buffer) -> bytes:
    """A whole DATA frame (tests and small payloads; large ones send the header, then the file)."""
    return encode_data_header(offset, memoryview(payload).nbytes) + bytes(payload)
