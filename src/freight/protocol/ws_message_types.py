"""freight's WebSocket upload protocol: the control messages, their errors, and building them.

One frozen dataclass per JSON message of either direction (``{"op": ...}`` in a text frame)
and :func:`build_message`, which turns one into the text of a frame;
:mod:`~freight.protocol.ws_parse` reads them back.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeAlias

from freight.errors import BadRequest, FreightError

MAX_CONTROL_SIZE = 8 * 1024  # a control message is a few hundred bytes; this bounds hostile ones
MAX_INT64 = 2**63 - 1
MAX_NAME_LENGTH = 1024
MAX_TOKEN_LENGTH = 1024
MAX_MESSAGE_LENGTH = 2048


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
    relative_path: str | None = None  # where the file sat in a folder sent: a/b/name


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
