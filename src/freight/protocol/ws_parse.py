"""freight's WebSocket upload protocol: parsing the JSON control messages of both directions.

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
from typing import Any

from freight.protocol.metadata import MAX_RELATIVE_PATH_BYTES, relative_path_problem
from freight.protocol.ws_message_types import (
    MAX_CONTROL_SIZE,
    MAX_INT64,
    MAX_MESSAGE_LENGTH,
    MAX_NAME_LENGTH,
    MAX_TOKEN_LENGTH,
    ClientMessage,
    Credit,
    Done,
    ErrorReply,
    Finished,
    InvalidMessage,
    Ready,
    Resume,
    ServerMessage,
    Start,
)

_UPLOAD_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")  # what new_upload_id makes; never a path
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_ERROR_CODE = re.compile(r"ERR_[A-Z0-9_]{1,60}")


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
            relative_path=_relative_path(body, "relative_path"),
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


def _relative_path(body: Mapping[str, Any], name: str) -> str | None:
    value = _optional_text(body, name, MAX_RELATIVE_PATH_BYTES)
    if value is not None and (problem := relative_path_problem(value)) is not None:
        raise InvalidMessage(f'"{name}" is refused: {problem}', field=name)
    return value


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
