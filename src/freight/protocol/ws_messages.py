"""freight's WebSocket upload protocol, sans-IO: control messages, flow control, origins.

Text frames carry one JSON object each, ``{"op": ...}``; binary frames carry file bytes.
This module parses and builds the JSON messages of both directions (typed dataclasses in,
``str`` out, and back), keeps the server's flow-control books (:class:`ReceiveWindow`) and
holds the small pure rules around them (close codes, same-origin). It also reads and writes
RFC 6455 frame headers (:func:`parse_frame_header`, :func:`build_frame_header`), so that
binary frames can go between a socket and a file without a WebSocket library copying them.
Nothing here touches a socket, a file or aiohttp; ``docs/websocket.md`` is the protocol
written out in full.

Rules the parsers keep:

* A message larger than ``max_size`` UTF-8 bytes is refused before it is decoded.
* Anything wrong (not JSON, not an object, unknown ``op``, missing or ill-typed field, a
  string that is not valid UTF-8) raises :class:`InvalidMessage`, whose ``field`` detail
  names the culprit. Nothing else escapes: no ``ValueError``, ``RecursionError`` or
  ``UnicodeError``, so a transport never turns a hostile message into a 500.
* Unknown fields are ignored, so either side may add optional fields later.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeAlias

from freight._types import Buffer
from freight.errors import BadRequest, FreightError

__all__ = [
    "CLOSE_FRAME_TOO_LARGE",
    "CLOSE_INTERNAL_ERROR",
    "CLOSE_NORMAL",
    "MAX_CONTROL_SIZE",
    "MAX_FRAME_HEADER",
    "MAX_INT64",
    "OP_BINARY",
    "OP_CLOSE",
    "OP_CONTINUATION",
    "OP_PING",
    "OP_PONG",
    "OP_TEXT",
    "ClientMessage",
    "Credit",
    "CreditExceeded",
    "Done",
    "ErrorReply",
    "Finished",
    "FrameHeader",
    "FrameTooLarge",
    "InvalidMessage",
    "Message",
    "Ready",
    "ReceiveWindow",
    "Resume",
    "ServerMessage",
    "Start",
    "UnexpectedMessage",
    "apply_mask",
    "build_frame_header",
    "build_message",
    "close_code_for",
    "error_reply",
    "is_same_origin",
    "parse_client_message",
    "parse_frame_header",
    "parse_server_message",
]

MAX_CONTROL_SIZE = 8 * 1024  # a control message is a few hundred bytes; this bounds hostile ones
MAX_INT64 = 2**63 - 1
MAX_NAME_LENGTH = 1024
MAX_TOKEN_LENGTH = 1024
MAX_MESSAGE_LENGTH = 2048
_UPLOAD_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")  # what new_upload_id makes; never a path
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_ERROR_CODE = re.compile(r"ERR_[A-Z0-9_]{1,60}")

CLOSE_NORMAL = 1000
CLOSE_FRAME_TOO_LARGE = 1009  # RFC 6455 "message too big"
CLOSE_INTERNAL_ERROR = 1011
_CLOSE_APPLICATION_BASE = 4000  # 4000-4999 are private: 4000 + the error's HTTP status


# errors -----------------------------------------------------------------------------------


class InvalidMessage(BadRequest):
    """A control message is not one this protocol defines; ``details['field']`` says why."""

    code = "ERR_INVALID_MESSAGE"


class UnexpectedMessage(BadRequest):
    """A well-formed message (or data) arrived when the protocol does not allow it."""

    code = "ERR_UNEXPECTED_MESSAGE"


class CreditExceeded(BadRequest):
    """Binary data went past the offset the server granted."""

    code = "ERR_CREDIT_EXCEEDED"


class FrameTooLarge(BadRequest):
    """A binary frame was larger than the negotiated ``max_frame`` (same code as raw TCP's)."""

    code = "ERR_FRAME_TOO_LARGE"


# messages ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Start:
    """Client: begin a new upload of ``size`` bytes named ``name``."""

    op: ClassVar[str] = "start"
    name: str
    size: int
    sha256: str | None = None
    token: str | None = None
    max_frame: int | None = None


@dataclass(frozen=True)
class Resume:
    """Client: continue upload ``id`` from the bytes the server holds."""

    op: ClassVar[str] = "resume"
    id: str
    sha256: str | None = None
    token: str | None = None
    max_frame: int | None = None


@dataclass(frozen=True)
class Done:
    """Client: every byte was sent; finish the upload (checking ``sha256`` if given)."""

    op: ClassVar[str] = "done"
    sha256: str | None = None


@dataclass(frozen=True)
class Ready:
    """Server: send from ``offset`` (durable), at most ``credit`` bytes beyond it for now."""

    op: ClassVar[str] = "ready"
    id: str
    offset: int
    size: int
    credit: int
    max_frame: int
    url: str


@dataclass(frozen=True)
class Credit:
    """Server: everything before ``offset`` is durable; send up to ``offset + credit``."""

    op: ClassVar[str] = "credit"
    offset: int
    credit: int


@dataclass(frozen=True)
class Finished:
    """Server: the upload is a file now, at ``url``, with this SHA-256 (lowercase hex)."""

    op: ClassVar[str] = "finished"
    id: str
    url: str
    sha256: str
    size: int


@dataclass(frozen=True)
class ErrorReply:
    """Server: the request failed with a stable ``code``; the connection closes next."""

    op: ClassVar[str] = "error"
    code: str
    message: str
    status: int
    details: Mapping[str, Any] = field(default_factory=dict)


ClientMessage: TypeAlias = Start | Resume | Done
ServerMessage: TypeAlias = Ready | Credit | Finished | ErrorReply
Message: TypeAlias = ClientMessage | ServerMessage


def error_reply(error: FreightError) -> ErrorReply:
    """The message that reports ``error``, with its details (``offset``, ``missing``...)."""
    return ErrorReply(error.code, error.message, error.status, dict(error.details))


# building ---------------------------------------------------------------------------------


def build_message(message: Message) -> str:
    """One message as the JSON text of a text frame; optional fields left out when unset."""
    body: dict[str, Any] = {"op": message.op}
    if isinstance(message, ErrorReply):
        # Details first, so no detail can shadow a field the protocol defines.
        body = {**message.details, **body}
        body.update(code=message.code, message=message.message, status=message.status)
    else:
        for name, value in vars(message).items():
            if value is not None:
                body[name] = value
    return json.dumps(body, separators=(",", ":"), default=str)


# parsing ----------------------------------------------------------------------------------


def parse_client_message(data: str | bytes, *, max_size: int = MAX_CONTROL_SIZE) -> ClientMessage:
    """What a client sent in a text frame; raises :class:`InvalidMessage` for anything else."""
    body = _decode(data, max_size)
    op = body.get("op")
    if op == "start":
        return Start(
            name=_text(body, "name", MAX_NAME_LENGTH),
            size=_integer(body, "size"),
            sha256=_sha256(body, "sha256", required=False),
            token=_optional_text(body, "token", MAX_TOKEN_LENGTH),
            max_frame=_optional_integer(body, "max_frame", minimum=1),
        )
    if op == "resume":
        return Resume(
            id=_upload_id(body, "id"),
            sha256=_sha256(body, "sha256", required=False),
            token=_optional_text(body, "token", MAX_TOKEN_LENGTH),
            max_frame=_optional_integer(body, "max_frame", minimum=1),
        )
    if op == "done":
        return Done(sha256=_sha256(body, "sha256", required=False))
    raise _unknown_op(op, ("start", "resume", "done"))


def parse_server_message(data: str | bytes, *, max_size: int = MAX_CONTROL_SIZE) -> ServerMessage:
    """What a server sent in a text frame; raises :class:`InvalidMessage` for anything else."""
    body = _decode(data, max_size)
    op = body.get("op")
    if op == "ready":
        return Ready(
            id=_upload_id(body, "id"),
            offset=_integer(body, "offset"),
            size=_integer(body, "size"),
            credit=_integer(body, "credit"),
            max_frame=_integer(body, "max_frame", minimum=1),
            url=_text(body, "url", MAX_NAME_LENGTH),
        )
    if op == "credit":
        return Credit(offset=_integer(body, "offset"), credit=_integer(body, "credit"))
    if op == "finished":
        sha256 = _sha256(body, "sha256", required=True)
        assert sha256 is not None
        return Finished(
            id=_upload_id(body, "id"),
            url=_text(body, "url", MAX_NAME_LENGTH),
            sha256=sha256,
            size=_integer(body, "size"),
        )
    if op == "error":
        code = _text(body, "code", 64)
        if not _ERROR_CODE.fullmatch(code):
            raise InvalidMessage('"code" must look like ERR_SOMETHING', field="code")
        details = {k: v for k, v in body.items() if k not in ("op", "code", "message", "status")}
        return ErrorReply(
            code=code,
            message=_text(body, "message", MAX_MESSAGE_LENGTH, allow_empty=True),
            status=_integer(body, "status", minimum=100, maximum=599),
            details=details,
        )
    raise _unknown_op(op, ("ready", "credit", "finished", "error"))


def _decode(data: str | bytes, max_size: int) -> dict[str, Any]:
    # Characters never outnumber UTF-8 bytes, so a long str is refused before encoding it.
    if len(data) > max_size or (
        isinstance(data, str) and len(data.encode("utf-8", "surrogatepass")) > max_size
    ):
        raise InvalidMessage(f"a control message may hold at most {max_size} bytes", field="op")
    try:
        body = json.loads(data)
    except (ValueError, RecursionError) as exc:  # RecursionError: deeply nested arrays
        raise InvalidMessage("a control message must be JSON", field="op") from exc
    if not isinstance(body, dict):
        raise InvalidMessage("a control message must be a JSON object", field="op")
    return body


def _unknown_op(op: object, known: tuple[str, ...]) -> InvalidMessage:
    if op is None:
        return InvalidMessage('a control message needs an "op" field', field="op")
    shown = op if isinstance(op, str) and len(op) <= 32 else "?"
    return InvalidMessage(f'unknown op "{shown}"; expected one of {", ".join(known)}', field="op")


def _integer(
    body: Mapping[str, Any], name: str, *, minimum: int = 0, maximum: int = MAX_INT64
) -> int:
    value = body.get(name)
    if value is None:
        raise InvalidMessage(f'the "{name}" field is missing', field=name)
    # bool is an int to Python but not to JSON; floats (1.0, 1e3) are refused too.
    if type(value) is not int or not minimum <= value <= maximum:
        raise InvalidMessage(f'"{name}" must be an integer from {minimum} to {maximum}', field=name)
    return value


def _optional_integer(body: Mapping[str, Any], name: str, *, minimum: int) -> int | None:
    return None if body.get(name) is None else _integer(body, name, minimum=minimum)


def _text(body: Mapping[str, Any], name: str, max_length: int, *, allow_empty: bool = False) -> str:
    value = body.get(name)
    if value is None:
        raise InvalidMessage(f'the "{name}" field is missing', field=name)
    if not isinstance(value, str) or len(value) > max_length or not (value or allow_empty):
        raise InvalidMessage(
            f'"{name}" must be a non-empty string of at most {max_length} characters', field=name
        )
    # JSON escapes can spell lone surrogates, which no file system or database stores.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidMessage(f'"{name}" is not valid Unicode text', field=name) from exc
    if "\x00" in value:
        raise InvalidMessage(f'"{name}" must not contain NUL characters', field=name)
    return value


def _optional_text(body: Mapping[str, Any], name: str, max_length: int) -> str | None:
    return None if body.get(name) is None else _text(body, name, max_length)


def _upload_id(body: Mapping[str, Any], name: str) -> str:
    value = _text(body, name, 128)
    if not _UPLOAD_ID.fullmatch(value):
        raise InvalidMessage(f'"{name}" is not an upload id', field=name)
    return value


def _sha256(body: Mapping[str, Any], name: str, *, required: bool) -> str | None:
    if body.get(name) is None and not required:
        return None
    value = _text(body, name, 64)
    if not _SHA256.fullmatch(value):
        raise InvalidMessage(f'"{name}" must be 64 hexadecimal digits', field=name)
    return value.lower()


# flow control -----------------------------------------------------------------------------


class ReceiveWindow:
    """The server's flow-control books for one connection.

    The client may send bytes up to ``limit``: the durable offset plus the credit, never
    past the upload's size, in frames of at most ``max_frame`` bytes. Once ``window`` bytes
    arrived since the last grant the server makes them durable and calls :meth:`grant`.
    A client that waits for room for a whole frame can always go on as long as
    ``credit >= window + max_frame``; the constructor insists on it.
    """

    def __init__(self, *, offset: int, size: int, credit: int, window: int, max_frame: int):
        if credit < window + max_frame:
            raise ValueError("credit must cover a window plus a frame, or a client could stall")
        self.position = offset
        self.size = size
        self.credit = credit
        self.window = window
        self.max_frame = max_frame
        self._granted_at = offset
        self.limit = min(offset + credit, size)

    @property
    def opening_credit(self) -> int:
        """The credit announced in ``ready``."""
        return self.limit - self._granted_at

    @property
    def window_full(self) -> bool:
        """True once a window's worth of bytes arrived since the last grant."""
        return self.position - self._granted_at >= self.window

    def accept(self, nbytes: int) -> None:
        """Account for a binary frame of ``nbytes``, or raise before any of it is written."""
        if nbytes > self.max_frame:
            raise FrameTooLarge(
                f"a binary frame of {nbytes} bytes exceeds max_frame ({self.max_frame})",
                max_frame=self.max_frame,
            )
        if self.position + nbytes > self.limit:
            raise CreditExceeded(
                f"data up to byte {self.position + nbytes} goes past the granted "
                f"limit {self.limit}",
                offset=self._granted_at,
                limit=self.limit,
            )
        self.position += nbytes

    def grant(self, durable: int) -> Credit:
        """Everything up to ``durable`` is safe: move the limit and say so."""
        self._granted_at = durable
        self.limit = min(durable + self.credit, self.size)
        return Credit(offset=durable, credit=self.limit - durable)


# frame headers (RFC 6455 section 5.2) ----------------------------------------------------

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA
MAX_FRAME_HEADER = 14  # two bytes, a 64-bit length and a masking key


@dataclass(frozen=True)
class FrameHeader:
    """The header of one frame: ``length`` payload bytes follow its ``size`` bytes."""

    fin: bool  # the last frame of its message
    rsv: int  # the three reserved bits; 0 unless an extension was negotiated
    opcode: int
    mask: bytes | None  # the 4-byte masking key of a client's frame
    length: int
    size: int


def parse_frame_header(data: Buffer) -> FrameHeader | int:
    """The header at the start of ``data``, or how many bytes it needs if ``data`` is short.

    Only the layout is decoded. Whether the frame is allowed (its opcode, reserved bits,
    length) is for the caller to decide, or for a full WebSocket parser it hands the frame to.
    """
    view = memoryview(data).cast("B")
    if view.nbytes < 2:
        return 2
    first, second = view[0], view[1]
    code = second & 0x7F
    extra = 2 if code == 126 else 8 if code == 127 else 0
    masked = bool(second & 0x80)
    size = 2 + extra + (4 if masked else 0)
    if view.nbytes < size:
        return size
    length = int.from_bytes(view[2 : 2 + extra], "big") if extra else code
    return FrameHeader(
        fin=bool(first & 0x80),
        rsv=(first >> 4) & 0x7,
        opcode=first & 0xF,
        mask=bytes(view[size - 4 : size]) if masked else None,
        length=length,
        size=size,
    )


def build_frame_header(
    opcode: int, length: int, mask: bytes | None = None, *, fin: bool = True
) -> bytes:
    """The header of a frame of ``length`` bytes; a client passes its 4-byte ``mask``."""
    if not 0 <= length <= MAX_INT64:
        raise ValueError(f"a frame holds 0 to {MAX_INT64} bytes")
    if mask is not None and len(mask) != 4:
        raise ValueError("a masking key has 4 bytes")
    first = (0x80 if fin else 0) | opcode
    masked = 0x80 if mask is not None else 0
    if length < 126:
        header = bytes((first, masked | length))
    elif length < 1 << 16:
        header = bytes((first, masked | 126)) + length.to_bytes(2, "big")
    else:
        header = bytes((first, masked | 127)) + length.to_bytes(8, "big")
    return header + (mask or b"")


def apply_mask(mask: bytes, data: bytearray) -> None:
    """XOR ``data`` in place with the 4-byte ``mask``, repeated: masks and unmasks alike.

    Pure Python (one big-integer XOR); a transport uses a C version when it has one.
    """
    if len(mask) != 4:
        raise ValueError("a masking key has 4 bytes")
    size = len(data)
    if size:
        key = (mask * (size // 4 + 1))[:size]
        xored = int.from_bytes(data, "little") ^ int.from_bytes(key, "little")
        data[:] = xored.to_bytes(size, "little")


# pure rules around the socket -------------------------------------------------------------


def close_code_for(error: FreightError) -> int:
    """The WebSocket close code that ends a connection after ``error``.

    1009 for an oversized frame (RFC 6455), 1011 for an internal error, otherwise
    4000 + the error's HTTP status (4400, 4401, 4404, 4409, 4413, 4423, 4460, 4507...).
    """
    if isinstance(error, FrameTooLarge):
        return CLOSE_FRAME_TOO_LARGE
    if error.status >= 500 and error.code == FreightError.code:
        return CLOSE_INTERNAL_ERROR
    return _CLOSE_APPLICATION_BASE + error.status


_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_ORIGIN = re.compile(
    r"(?P<scheme>[a-z][a-z0-9+.-]*)://(?P<host>\[[0-9a-f:.]+\]|[^:/\[\]]+)"
    r"(?::(?P<port>[0-9]{1,5}))?/?",
    re.I,
)


def is_same_origin(origin: str, *, scheme: str, host: str) -> bool:
    """Whether a browser's ``Origin`` header names the server it is talking to.

    ``scheme`` and ``host`` describe the request (``host`` as in the ``Host`` header, port
    included when not the default). Default ports compare equal to no port; ``null`` and
    anything unparsable are foreign.
    """
    theirs = _origin_tuple(origin)
    ours = _origin_tuple(f"{scheme}://{host}")
    return theirs is not None and theirs == ours


def _origin_tuple(text: str) -> tuple[str, str, int] | None:
    match = _ORIGIN.fullmatch(text.strip())
    if match is None:
        return None
    scheme = match["scheme"].lower()
    default = _DEFAULT_PORTS.get(scheme)
    port = int(match["port"]) if match["port"] else default
    if port is None:
        return None
    # ws and wss share their origins with http and https.
    scheme = {"ws": "http", "wss": "https"}.get(scheme, scheme)
    return scheme, match["host"].lower().rstrip("."), port
