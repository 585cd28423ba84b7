"""The raw TCP protocol's ground rules: sizes and limits, frame types, errors, field checks.

Shared by :mod:`~freight.protocol.frame_types` (the frames) and
:mod:`~freight.protocol.frame_decoder` (the incremental decoder), so both apply one set of
rules. The protocol is specified in ``docs/protocol.md``.
"""

from __future__ import annotations

import enum
import re
import struct

from freight.errors import BadRequest, FreightError

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
FLAG_PATH = 0x02  # PUT: the name is the file's path in the folder sent (relativePath)

U16 = struct.Struct(">H")
U64 = struct.Struct(">Q")
ID_PATTERN = re.compile(rb"[A-Za-z0-9_-]{1,128}")
CODE_PATTERN = re.compile(rb"ERR_[A-Z0-9_]{1,60}")
NO_DIGEST = bytes(DIGEST_SIZE)


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


def check_offset(value: int, field: str) -> None:
    if not 0 <= value <= MAX_OFFSET:
        raise MalformedFrame(f"{field} {value} is outside 0..2^63-1")


def check_digest(value: bytes, field: str = "sha256") -> None:
    if len(value) != DIGEST_SIZE:
        raise MalformedFrame(f"{field} must be {DIGEST_SIZE} bytes, not {len(value)}")


def check_id(value: str) -> bytes:
    raw = value.encode("ascii", "replace")
    if not ID_PATTERN.fullmatch(raw):
        raise MalformedFrame("an id is 1-128 characters of A-Z a-z 0-9 _ -")
    return raw


def check_text(value: str, limit: int, field: str) -> bytes:
    try:
        raw = value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise MalformedFrame(f"{field} cannot be encoded as UTF-8") from exc
    if len(raw) > limit:
        raise FrameTooLarge(f"{field} is {len(raw)} bytes; at most {limit} are allowed")
    if "\x00" in value:
        raise MalformedFrame(f"{field} contains a NUL character")
    return raw


def decode_text(raw: bytes, field: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedFrame(f"{field} is not valid UTF-8") from exc


def decode_id(raw: bytes) -> str:
    if not ID_PATTERN.fullmatch(raw):
        raise MalformedFrame("an id is 1-128 characters of A-Z a-z 0-9 _ -")
    return raw.decode("ascii")


def pack(frame_type: FrameType, body: bytes, flags: int = 0) -> bytes:
    return HEADER.pack(frame_type, flags, 0, len(body)) + body


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
ALLOWED_FLAGS: dict[FrameType, int] = {FrameType.PUT: FLAG_SHA256 | FLAG_PATH}
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
