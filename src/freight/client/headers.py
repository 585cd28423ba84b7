"""The response headers the client reads: pure functions, no I/O.

``freight.protocol`` holds the shared codecs (``Repr-Digest`` is parsed there); this adds
the client's side of ``Content-Range`` and ``Upload-Offset``, and turns malformed server
headers into :class:`~freight.client.errors.ProtocolViolation`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from freight.client.errors import ProtocolViolation
from freight.errors import InvalidHeader
from freight.protocol.digests import sha256_from_digest_header

__all__ = [
    "ContentRange",
    "parse_content_range",
    "parse_repr_digest",
    "parse_upload_offset",
]

_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE | re.ASCII)
_DIGITS = re.compile(r"[0-9]+")


def parse_repr_digest(value: str | None) -> bytes | None:
    """The raw SHA-256 in a ``Repr-Digest`` field, or None if absent or without sha-256."""
    if not value:
        return None
    try:
        return sha256_from_digest_header(value)
    except InvalidHeader as exc:
        raise ProtocolViolation(f"the server sent a malformed Repr-Digest: {exc.message}") from exc


@dataclass(frozen=True)
class ContentRange:
    """``Content-Range: bytes start-end/total``; ``end`` is inclusive, ``total`` may be unknown."""

    start: int
    end: int
    total: int | None


def parse_content_range(value: str | None) -> ContentRange:
    """Parse a satisfied byte range, or raise :class:`ProtocolViolation`."""
    match = _CONTENT_RANGE.match(value or "")
    if not match:
        raise ProtocolViolation(f"malformed Content-Range: {value!r}")
    start, end = int(match.group(1)), int(match.group(2))
    total = None if match.group(3) == "*" else int(match.group(3))
    if end < start or (total is not None and end >= total):
        raise ProtocolViolation(f"impossible Content-Range: {value!r}")
    return ContentRange(start, end, total)


def parse_upload_offset(value: str | None, header: str = "Upload-Offset") -> int:
    """A non-negative integer header such as ``Upload-Offset``; absent or bad is an error."""
    if value is None or not _DIGITS.fullmatch(value.strip()):
        raise ProtocolViolation(f"server sent no valid {header} header (got {value!r})")
    return int(value.strip())
