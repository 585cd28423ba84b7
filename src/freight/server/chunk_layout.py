"""The chunk API's pure side: how uploads split into chunks and pieces, and its requests.

Nothing here does I/O: it sizes chunks (:class:`ChunkPolicy`), maps chunk numbers and
``Content-Range`` pieces to byte ranges (:class:`ChunkLayout`, :class:`Piece`), says what
is missing, and validates request bodies and headers.

Pieces keep the received ranges few: a piece must start where its chunk's received bytes
end, and a whole chunk is written from there (:meth:`ChunkLayout.check_piece`), so a chunk
only ever holds one received run from its first byte, and an upload never holds more runs
than it has chunks, whatever a client sends. A piece is also at least
:attr:`ChunkPolicy.min_piece` bytes unless it ends its chunk, so a chunk costs a bounded
number of requests (each one a durable commit).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from freight.core import RangeSet, UploadSession
from freight.core.blobs import PartSized
from freight.core.writer import RequestChecksum
from freight.errors import (
    BadRequest,
    ChunkOutOfRange,
    InvalidHeader,
    PieceOffsetMismatch,
    RangeNotSatisfiable,
    UnsupportedChecksumAlgorithm,
    UploadNotFound,
)
from freight.protocol.checksum import digest_size, new_checksum
from freight.protocol.digests import parse_digest_header
from freight.protocol.metadata import relative_path_problem, safe_filename
from freight.protocol.ranges import parse_content_range

__all__ = [
    "API_PREFIX",
    "POLICY",
    "ChunkLayout",
    "ChunkPolicy",
    "CreateRequest",
    "Piece",
    "chunk_checksum",
    "layout_of",
    "parse_chunk_number",
    "parse_complete_request",
    "parse_create_request",
    "require_layout",
]

KiB = 1024
MiB = 1024 * KiB
API_PREFIX = "/api/uploads"
MAX_NAME_LENGTH = 4096
MAX_SIZE = (1 << 63) - 1
_CHUNK_NUMBER = re.compile(r"[0-9]{1,19}")
_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")
# Content-Digest algorithms (RFC 9530 names) and the hashlib names they map to.
_DIGEST_ALGORITHMS = (("sha-256", "sha256"), ("sha-512", "sha512"))


@dataclass(frozen=True)
class ChunkPolicy:
    """How the server sizes chunks: what a client asks is clamped to ``[minimum, maximum]``,
    then raised so that no upload has more than ``max_count`` chunks (status stays short).
    A piece of a chunk is at least ``min_piece`` bytes unless it is the chunk's last."""

    default: int = 10 * MiB
    minimum: int = 256 * KiB
    maximum: int = 64 * MiB
    max_count: int = 100_000
    min_piece: int = 256 * KiB

    def min_piece_on(self, store: object) -> int:
        """The smallest piece ``store`` takes: on a part-sized store (a chunk is a part)
        a whole chunk, since any less would be stored as an object of its own and sent
        again inside its part; else :attr:`min_piece`. What ends a chunk is never held
        to it."""
        if isinstance(store, PartSized):
            return max(self.min_piece, store.part_size)
        return self.min_piece

    def choose(self, size: int, requested: int | None) -> int:
        wanted = self.default if requested is None else requested
        clamped = min(max(wanted, self.minimum), self.maximum)
        return max(clamped, -(-size // self.max_count))


POLICY = ChunkPolicy()


@dataclass(frozen=True)
class Piece:
    """Bytes ``[start, end)`` of the file, inside chunk ``n`` (``[chunk_start, chunk_end)``);
    a whole chunk is the piece that spans it."""

    n: int
    start: int
    end: int
    chunk_start: int
    chunk_end: int
    ranged: bool = False  # named by a Content-Range, even if it spans the chunk

    @property
    def length(self) -> int:
        return self.end - self.start

    @property
    def whole(self) -> bool:
        return self.start == self.chunk_start and self.end == self.chunk_end

    def describe(self) -> str:
        if self.whole:
            return f"chunk {self.n}"
        first, last = self.start - self.chunk_start, self.end - self.chunk_start - 1
        return f"bytes {first}-{last} of chunk {self.n}"


@dataclass(frozen=True)
class ChunkLayout:
    """How an upload of ``size`` bytes splits into chunks; the last one may be shorter."""

    size: int
    chunk_size: int

    @property
    def count(self) -> int:
        return -(-self.size // self.chunk_size)

    def bounds(self, n: int) -> tuple[int, int]:
        """Byte range ``[start, end)`` of chunk ``n``."""
        if not 0 <= n < self.count:
            raise ChunkOutOfRange(
                f"chunk {n} does not exist: this upload has chunks 0 to {self.count - 1}"
                if self.count
                else f"chunk {n} does not exist: this upload is empty",
                chunk_count=self.count,
            )
        start = n * self.chunk_size
        return start, min(start + self.chunk_size, self.size)

    def piece(self, n: int, content_range: str | None, min_piece: int) -> Piece:
        """What a PUT of chunk ``n`` fills: the whole chunk, or the piece its
        ``Content-Range`` names (offsets counted from the chunk's first byte)."""
        start, end = self.bounds(n)
        if content_range is None:
            return Piece(n, start, end, start, end)
        length = end - start
        wanted, complete = parse_content_range(content_range)
        if (complete is not None and complete != length) or wanted.stop > length:
            raise RangeNotSatisfiable(
                f"chunk {n} has {length} bytes: send Content-Range: bytes first-last/{length}",
                size=length,
            )
        if wanted.stop < length and wanted.length < min_piece:
            raise BadRequest(f"a piece is at least {min_piece} bytes, unless it ends its chunk")
        return Piece(n, start + wanted.start, start + wanted.stop, start, end, ranged=True)

    @staticmethod
    def check_piece(piece: Piece, received: RangeSet) -> int | None:
        """How many of ``piece``'s first bytes are received already; None for a duplicate
        (all of it received).

        Only a whole chunk (no ``Content-Range``) may start inside the chunk's received
        bytes (a cut request kept them): those bytes are read and dropped, the rest written
        from where they end. A piece must start where the chunk's received bytes end, or
        :class:`PieceOffsetMismatch` is raised. Either way every chunk's received bytes
        stay one run from its first byte."""
        if received.covers(piece.start, piece.end):
            return None
        next_byte = min(received.end_of_run_from(piece.chunk_start), piece.chunk_end)
        if not piece.ranged:
            return next_byte - piece.start
        if piece.start != next_byte:
            offset = next_byte - piece.chunk_start
            raise PieceOffsetMismatch(
                f"{piece.describe()} does not follow the chunk's received bytes: "
                f"send the chunk from byte {offset} (chunk_offset)",
                chunk_offset=offset,
            )
        return 0

    def missing(self, received: RangeSet) -> list[list[int]]:
        """Half-open ranges ``[first, end)`` of chunks with any byte not received."""
        ranges: list[list[int]] = []
        for start, end in received.missing(self.size):
            first, stop = start // self.chunk_size, -(-end // self.chunk_size)
            if ranges and ranges[-1][1] >= first:
                ranges[-1][1] = max(ranges[-1][1], stop)
            else:
                ranges.append([first, stop])
        return ranges

    def missing_bytes(self, received: RangeSet) -> list[list[int]]:
        """Half-open byte ranges ``[start, end)`` missing from chunks that are partly
        received, each inside one chunk (a chunk missing whole has none: see ``missing``)."""
        ranges: list[list[int]] = []
        for start, end in received.missing(self.size):
            head_start, head_end = self.bounds(start // self.chunk_size)
            tail_start, tail_end = self.bounds((end - 1) // self.chunk_size)
            if head_start == tail_start:
                if (start, end) != (head_start, head_end):
                    ranges.append([start, end])
                continue
            if start > head_start:
                ranges.append([start, head_end])
            if end < tail_end:
                ranges.append([tail_start, end])
        return ranges


def layout_of(session: UploadSession) -> ChunkLayout | None:
    """The chunk layout of an upload created here; None for other protocols' uploads."""
    if session.length is None or not session.chunk_size or session.chunk_size <= 0:
        return None
    return ChunkLayout(session.length, session.chunk_size)


def require_layout(session: UploadSession) -> ChunkLayout:
    """The layout for writing or completing: 404 for an upload another protocol created
    (as a chunk upload it does not exist; ``GET /api/uploads/{id}`` still shows it)."""
    layout = layout_of(session)
    if layout is None:
        raise UploadNotFound(
            f"upload {session.id} was not created through {API_PREFIX}; use its own protocol"
        )
    return layout


# parsing requests -----------------------------------------------------------------------


@dataclass(frozen=True)
class CreateRequest:
    """A validated ``POST /api/uploads`` body; ``name`` is already made safe to display."""

    name: str | None
    size: int
    chunk_size: int | None
    sha256: str | None
    relative_path: str | None = None  # checked: see relative_path_problem()


def _integer(data: dict[str, Any], key: str, *, minimum: int) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    # bool is an int subclass: `true` is not a size.
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= MAX_SIZE:
        raise BadRequest(f"'{key}' must be an integer of at least {minimum}")
    return value


def _sha256(data: dict[str, Any]) -> str | None:
    value = data.get("sha256")
    if value is None:
        return None
    if not isinstance(value, str) or not _SHA256_HEX.fullmatch(value):
        raise BadRequest("'sha256' must be 64 hexadecimal digits")
    return value.lower()


def _object(data: object) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object")
    return data


def parse_create_request(data: object) -> CreateRequest:
    """Validate a creation body; unknown keys are ignored so clients may send more."""
    fields = _object(data)
    name = fields.get("name")
    if not isinstance(name, str) or not name or len(name) > MAX_NAME_LENGTH:
        raise BadRequest(f"'name' must be a non-empty string of at most {MAX_NAME_LENGTH} chars")
    size = _integer(fields, "size", minimum=0)
    if size is None:
        raise BadRequest("'size' (the file's length in bytes) is required")
    chunk_size = _integer(fields, "chunk_size", minimum=1)
    return CreateRequest(
        safe_filename(name, "") or None, size, chunk_size, _sha256(fields), _relative_path(fields)
    )


def _relative_path(data: dict[str, Any]) -> str | None:
    value = data.get("relative_path")
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequest("'relative_path' must be a string")
    if (problem := relative_path_problem(value)) is not None:
        raise BadRequest(f"'relative_path' is refused: {problem}")
    return value


def parse_complete_request(data: object) -> str | None:
    """The SHA-256 a completion expects, if it names one."""
    return _sha256(_object(data))


def parse_chunk_number(text: str) -> int:
    if not _CHUNK_NUMBER.fullmatch(text):
        raise BadRequest("a chunk number is a non-negative integer")
    return int(text)


def chunk_checksum(header: str | None) -> RequestChecksum | None:
    """What a chunk's (or piece's) writer checks before it counts (``Content-Digest``,
    RFC 9530: the digest of this request's body)."""
    if header is None:
        return None
    digests = parse_digest_header(header, header="Content-Digest")
    for field_name, algorithm in _DIGEST_ALGORITHMS:
        expected = digests.get(field_name)
        if expected is None:
            continue
        if len(expected) != digest_size(algorithm):
            raise InvalidHeader(f"Content-Digest {field_name} has the wrong length")
        return RequestChecksum(algorithm, expected, new_checksum(algorithm))
    raise UnsupportedChecksumAlgorithm("Content-Digest must carry sha-256 or sha-512")
