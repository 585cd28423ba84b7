"""HTTP ``Range`` / ``If-Range`` and entity-tag matching for downloads (RFC 9110 sections 13-14).

freight serves one range per response. RFC 9110 lets a server ignore ``Range``, so anything
it will not serve - multiple ranges, other units, bad syntax, ``last < first`` - makes
:func:`parse_range` return ``None`` and the caller sends the whole file with 200. Only a
well-formed single range that selects no byte is an error (416, :class:`RangeNotSatisfiable`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from freight.errors import InvalidHeader, RangeNotSatisfiable
from freight.protocol.tus import parse_http_date

__all__ = [
    "ByteRange",
    "etag_matches",
    "etag_matches_strong",
    "if_range_allows_partial",
    "parse_content_range",
    "parse_range",
    "unsatisfied_content_range",
]

_SINGLE_RANGE = re.compile(r"bytes=(?:(\d+)-(\d*)|-(\d+))", re.ASCII | re.IGNORECASE)
# Bounded digits: a request's Content-Range never makes Python parse a huge integer.
_CONTENT_RANGE = re.compile(r"bytes ([0-9]{1,19})-([0-9]{1,19})/([0-9]{1,19}|\*)", re.IGNORECASE)
# entity-tag = [ "W/" ] DQUOTE *etagc DQUOTE ; etagc = %x21 / %x23-7E / obs-text
_ENTITY_TAG = re.compile(r'(W/)?"([\x21\x23-\x7e\x80-\xff]*)"')


@dataclass(frozen=True)
class ByteRange:
    """Bytes ``start`` to ``end_inclusive`` of a representation, both counted from 0."""

    start: int
    end_inclusive: int

    def __post_init__(self) -> None:
        if not 0 <= self.start <= self.end_inclusive:
            raise ValueError(f"invalid byte range {self.start}-{self.end_inclusive}")

    @property
    def length(self) -> int:
        return self.end_inclusive - self.start + 1

    @property
    def stop(self) -> int:
        """The exclusive end, for slicing and ``sendfile`` counts."""
        return self.end_inclusive + 1

    def content_range(self, size: int) -> str:
        """The ``Content-Range`` value of a 206 response: ``bytes a-b/size``."""
        return f"bytes {self.start}-{self.end_inclusive}/{size}"


def unsatisfied_content_range(size: int) -> str:
    """The ``Content-Range`` value of a 416 response: ``bytes */size``."""
    return f"bytes */{size}"


def parse_content_range(header: str) -> tuple[ByteRange, int | None]:
    """The range a request body fills (``Content-Range: bytes first-last/length``, RFC 9110
    section 14.4) and the complete length it names (``None`` for ``*``).

    Raises :class:`InvalidHeader` for anything else, and for the values RFC 9110 calls
    invalid: ``last < first``, or a length at or below ``last``.
    """
    match = _CONTENT_RANGE.fullmatch(header.strip(" \t"))
    if match is None:
        raise InvalidHeader("Content-Range must be 'bytes first-last/length' (or '/*')")
    first, last = int(match[1]), int(match[2])
    length = None if match[3] == "*" else int(match[3])
    if last < first or (length is not None and length <= last):
        raise InvalidHeader(f"Content-Range {header.strip()!r} is not a valid range")
    return ByteRange(first, last), length


def _suffix_range(suffix_length: int, size: int) -> ByteRange | None:
    if suffix_length == 0:
        raise RangeNotSatisfiable("Range asks for the last 0 bytes", size=size)
    if size == 0:
        # RFC 9110 counts this as satisfiable, but there is no byte to put in a 206: send the
        # (empty) whole file instead, which ignoring Range allows.
        return None
    return ByteRange(max(0, size - suffix_length), size - 1)


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The single byte range a ``Range`` header asks of a ``size``-byte file.

    ``None`` means serve the whole file: no header, or one freight ignores (see the module
    docstring). An end past the file is clamped. Raises :class:`RangeNotSatisfiable` when the
    range starts at or after the end of the file, or asks for a zero-length suffix.
    """
    if header is None:
        return None
    match = _SINGLE_RANGE.fullmatch(header.strip(" \t"))
    if match is None:
        return None
    first, last, suffix = match.groups()
    try:
        if suffix is not None:
            return _suffix_range(int(suffix), size)
        start, end = int(first), (int(last) if last else None)
    except ValueError:  # more digits than int() accepts: nonsense, so ignore it
        return None
    if end is not None and end < start:
        return None
    if start >= size:
        raise RangeNotSatisfiable(f"Range starts at byte {start} of a {size}-byte file", size=size)
    return ByteRange(start, size - 1 if end is None else min(end, size - 1))


def _entity_tags(header: str) -> list[tuple[bool, str]] | None:
    """``(weak, opaque)`` for each tag of a comma list; ``None`` if the list is malformed."""
    tags: list[tuple[bool, str]] = []
    position = 0
    for match in _ENTITY_TAG.finditer(header):
        gap = header[position : match.start()]
        if gap.strip(" \t,") or (tags and "," not in gap):
            return None
        tags.append((match[1] is not None, match[2]))
        position = match.end()
    if header[position:].strip(" \t,") or not tags:
        return None
    return tags


def _single_entity_tag(etag: str) -> tuple[bool, str] | None:
    match = _ENTITY_TAG.fullmatch(etag.strip(" \t"))
    return None if match is None else (match[1] is not None, match[2])


def _matches(header: str | None, etag: str, *, strong: bool) -> bool:
    if header is None:
        return False
    if header.strip(" \t") == "*":
        return True
    ours = _single_entity_tag(etag)
    theirs = _entity_tags(header)
    # A malformed list matches nothing: If-None-Match then serves the file, If-Match fails.
    if ours is None or theirs is None:
        return False
    if strong:
        return not ours[0] and (False, ours[1]) in theirs
    return any(opaque == ours[1] for _, opaque in theirs)


def etag_matches(header: str | None, etag: str) -> bool:
    """``If-None-Match`` test: weak comparison against a list of tags, or ``*``."""
    return _matches(header, etag, strong=False)


def etag_matches_strong(header: str | None, etag: str) -> bool:
    """``If-Match`` test: strong comparison (weak tags never match), or ``*``."""
    return _matches(header, etag, strong=True)


def if_range_allows_partial(if_range: str | None, etag: str, last_modified: float) -> bool:
    """Whether a ``Range`` may be honoured given ``If-Range`` (RFC 9110 section 13.1.5).

    Absent: yes. An entity-tag: only on a strong, exact match (a weak tag never matches). A
    date: only if it equals the Last-Modified second. Anything unparseable: no, so the client
    gets the whole, current file rather than a splice of two versions.
    """
    if if_range is None:
        return True
    value = if_range.strip(" \t")
    if value.startswith(('"', "W/")):
        ours = _single_entity_tag(etag)
        theirs = _single_entity_tag(value)
        return ours is not None and not ours[0] and theirs == ours
    try:
        return parse_http_date(value, "If-Range") == math.floor(last_modified)
    except InvalidHeader:
        return False
