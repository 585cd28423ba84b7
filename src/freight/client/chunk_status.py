"""The chunk client's view of the server: its upload as last seen, the server's answers
read strictly, and the size of the pieces chunks are sent in.

A server that takes pieces of chunks (``Content-Range`` on a chunk PUT) says so with
``min_piece_size``; it also lists, in ``missing_bytes``, what chunks partly received still
lack, so a resumed upload sends only those bytes. :class:`PieceSizer` halves the piece size
after repeated losses of whole pieces and grows it back after a run of pieces that got
through.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import aiohttp
from yarl import URL

from freight.client.errors import ProtocolViolation

__all__ = [
    "GROW_AFTER",
    "LOSSES_TO_SHRINK",
    "MIN_PIECE",
    "WASTE_SHARE",
    "PieceSizer",
    "Remote",
    "count_field",
    "created_remote",
    "json_object",
    "missing_of",
    "optional_count",
    "positive_field",
    "ranges_field",
    "status_remote",
]

# The smallest piece this client sends, whatever the server allows: below it each request's
# headers, round trip and the server's durable commit cost more than what a cut wastes.
MIN_PIECE = 256 * 1024
# Whole pieces of one chunk lost in a row before pieces shrink. One loss may be bad luck, or
# a cut of every connection at once (which fails each chunk in flight once).
LOSSES_TO_SHRINK = 2
# Pieces shrink once the bytes lost at their size exceed this share of those acknowledged:
# what a cut wastes is about half a piece, so small pieces keep the bytes sent again few.
WASTE_SHARE = 0.125
# Pieces that got through in a row before pieces grow again: rarely on a link that keeps
# cutting (each failed growth costs a piece or two), soon enough once it has healed.
GROW_AFTER = 16


@dataclass
class Remote:
    """The server's upload as last seen: ``missing`` chunk ranges ``[first, end)``,
    ``missing_bytes`` the byte ranges lacking from chunks partly received, and
    ``min_piece`` (None if the server takes whole chunks only)."""

    url: URL
    chunk_size: int
    chunk_count: int
    received: int
    missing: list[tuple[int, int]]
    missing_bytes: list[tuple[int, int]] = field(default_factory=list)
    min_piece: int | None = None

    def to_send(self, size: int) -> list[tuple[int, list[tuple[int, int]]]]:
        """Each missing chunk with the byte ranges of it to send (all of it, if no byte of
        it is received)."""
        partial: dict[int, list[tuple[int, int]]] = {}
        for start, end in self.missing_bytes:
            n = start // self.chunk_size
            if end > min((n + 1) * self.chunk_size, size):
                raise ProtocolViolation(f"missing bytes [{start}, {end}) are not in one chunk")
            partial.setdefault(n, []).append((start, end))
        chunks: list[tuple[int, list[tuple[int, int]]]] = []
        for first, end in self.missing:
            for n in range(first, end):
                start = n * self.chunk_size
                whole = [(start, min(start + self.chunk_size, size))]
                chunks.append((n, partial.get(n, whole)))
        return chunks

    def lacking(self, size: int) -> int:
        """Bytes the server does not have."""
        return sum(end - start for _, spans in self.to_send(size) for start, end in spans)


class PieceSizer:
    """The size of the pieces every chunk of one upload is sent in: the whole chunk at
    first, halved (down to ``floor``) when a chunk loses :data:`LOSSES_TO_SHRINK` whole
    pieces in a row, or when pieces of this size have been lost at least twice and the
    bytes lost exceed :data:`WASTE_SHARE` of those acknowledged; doubled after
    :data:`GROW_AFTER` pieces in a row got through. One size for all chunks: the link is
    theirs to share, and so is what is learnt about it."""

    def __init__(self, chunk_size: int, server_minimum: int | None) -> None:
        self.chunk_size = chunk_size
        self.size = chunk_size
        # A server without pieces takes whole chunks only: the floor is then the chunk.
        wanted = chunk_size if server_minimum is None else max(MIN_PIECE, server_minimum)
        self.floor = min(chunk_size, wanted)
        self.takes_pieces = server_minimum is not None
        self._through = 0  # pieces in a row that got through
        self._losses = 0  # at this size
        self._lost_bytes = 0  # sent at this size, then lost
        self._acknowledged = 0  # at this size

    def lost(self, tried: int, sent: int, losses: int) -> int:
        """A piece of ``tried`` bytes was lost after ``sent`` of them went out, the chunk's
        ``losses``-th loss in a row. Returns the largest next piece for that chunk: below
        ``tried`` after :data:`LOSSES_TO_SHRINK` losses, unless ``tried`` is the floor."""
        self._through = 0
        self._losses += 1
        self._lost_bytes += sent
        wasteful = self._losses >= 2 and self._lost_bytes > WASTE_SHARE * self._acknowledged
        if losses >= LOSSES_TO_SHRINK or wasteful:
            # A chunk's short last piece says as much about the link as a full one.
            self._resize(min(self.size, max(self.floor, max(tried, self.size) // 2)))
        if losses >= LOSSES_TO_SHRINK:
            return min(self.size, max(self.floor, tried // 2))
        return self.size

    def got_through(self, count: int) -> None:
        """A piece of ``count`` bytes was acknowledged."""
        self._acknowledged += count
        self._through += 1
        if self._through >= GROW_AFTER and self.size < self.chunk_size:
            self._resize(min(self.chunk_size, 2 * self.size))

    def _resize(self, size: int) -> None:
        if size != self.size:
            self.size = size
            self._through = self._losses = self._lost_bytes = self._acknowledged = 0


def created_remote(data: dict[str, Any], endpoint: URL, size: int) -> Remote:
    """The upload a ``POST /api/uploads`` answer describes, for a file of ``size`` bytes."""
    chunk_size, count = positive_field(data, "chunk_size"), count_field(data, "chunk_count")
    if count != -(-size // chunk_size):
        raise ProtocolViolation(f"{count} chunks of {chunk_size} bytes cannot hold the file")
    url = endpoint / str(data.get("id", ""))
    missing = [(0, count)] if count else []
    return Remote(url, chunk_size, count, 0, missing, [], optional_count(data, "min_piece_size"))


def status_remote(data: dict[str, Any], url: URL, size: int) -> Remote | None:
    """The upload a ``GET /api/uploads/{id}`` answer describes; None if it is not a chunk
    upload of a file of ``size`` bytes."""
    if data.get("size") != size or not data.get("chunk_size"):
        return None
    missing, missing_bytes = ([], []) if data.get("state") == "finished" else missing_of(data)
    return Remote(
        url,
        positive_field(data, "chunk_size"),
        count_field(data, "chunk_count"),
        count_field(data, "received_bytes"),
        missing,
        missing_bytes,
        optional_count(data, "min_piece_size"),
    )


def missing_of(data: dict[str, Any]) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """``missing`` chunk ranges and ``missing_bytes`` (absent from a server that takes
    whole chunks only) of a status or an incomplete-upload error."""
    partial = data.get("missing_bytes")
    missing_bytes = [] if partial is None else ranges_field(partial, "byte")
    return ranges_field(data.get("missing")), missing_bytes


async def json_object(resp: aiohttp.ClientResponse) -> dict[str, Any]:
    try:
        data = await resp.json(content_type=None)
    except ValueError as exc:
        raise ProtocolViolation(f"the server answered HTTP {resp.status} without JSON") from exc
    if not isinstance(data, dict):
        raise ProtocolViolation("the server's answer is not a JSON object")
    return data


def count_field(data: dict[str, Any], key: str) -> int:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ProtocolViolation(f"the server sent no valid {key!r} (got {value!r})")
    return value


def positive_field(data: dict[str, Any], key: str) -> int:
    value = count_field(data, key)
    if value == 0:
        raise ProtocolViolation(f"the server sent {key!r} = 0")
    return value


def optional_count(data: dict[str, Any], key: str) -> int | None:
    """A positive count the server may not send (an older server)."""
    return None if data.get(key) is None else positive_field(data, key)


def ranges_field(value: object, what: str = "chunk") -> list[tuple[int, int]]:
    """Half-open ranges from the server (of chunks, or of bytes)."""
    if not isinstance(value, list):
        raise ProtocolViolation(f"the server sent no valid {what} ranges (got {value!r})")
    ranges: list[tuple[int, int]] = []
    for item in value:
        if (
            not isinstance(item, list)
            or len(item) != 2
            or not all(isinstance(x, int) and not isinstance(x, bool) for x in item)
            or not 0 <= item[0] < item[1]
        ):
            raise ProtocolViolation(f"the server sent an invalid {what} range {item!r}")
        ranges.append((item[0], item[1]))
    return ranges
