"""The chunk upload API at ``/api/uploads``: a thin JSON adapter over the upload engine.

Made for browsers and proxies that cap request bodies (100 MB is common): the client
creates an upload, PUTs fixed-size chunks in any order and several at once, asks which
chunks are missing, and completes it with the SHA-256 it expects.

* ``POST /api/uploads`` ``{name, size, chunk_size?, sha256?}`` → 201
  ``{id, name, size, chunk_size, chunk_count, upload_url, expires}``. The server picks the
  chunk size (:class:`ChunkPolicy`); the client must use the one it is given.
* ``PUT /api/uploads/{id}/chunks/{n}``: the raw bytes of chunk ``n`` (0-based), written
  in place at ``n * chunk_size`` of the upload's single part file: no chunk files and no
  merge. A chunk counts whole or not at all; one already received is drained unwritten
  and answered 200 with ``duplicate: true``. ``Content-Digest`` (RFC 9530, sha-256 or
  sha-512) is checked before the chunk is acknowledged.
* ``GET /api/uploads/{id}``: progress; ``missing`` lists *half-open* chunk ranges
  ``[first, end)``, so ``[[0, 2], [5, 6]]`` means chunks 0, 1 and 5.
* ``POST /api/uploads/{id}/complete`` ``{sha256?}`` → ``{file_id, name, size, sha256, url}``.
* ``DELETE /api/uploads/{id}`` → 204; ``GET /api/uploads`` lists uploads in progress of
  every protocol.

Statuses (mapped in :mod:`freight.server.errors` for protocol ``"chunks"``): 400 malformed
JSON, field or header, or a body of the wrong length; 404 unknown upload; 409 completing
with chunks missing (``missing`` in the body) or aborting a finished upload; 410 expired;
413 over ``--max-size``; 415 a form-encoded chunk; 416 a chunk number past the last chunk;
422 a ``Content-Digest`` or expected SHA-256 that does not match (the data is kept); 423 the
same chunk is being written by another request right now; 507 not enough disk.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from freight.core import RangeSet, UploadEngine, UploadSession, UploadWriter
from freight.core.writer import RequestChecksum
from freight.errors import (
    BadRequest,
    ChunkOutOfRange,
    ClientDisconnected,
    FreightError,
    InvalidHeader,
    LengthMismatch,
    RangeAlreadyReceived,
    UnsupportedChecksumAlgorithm,
    UnsupportedMediaType,
    UploadCompleted,
    UploadIncomplete,
    UploadNotFound,
    UploadTooLarge,
)
from freight.protocol.checksum import digest_size, new_checksum
from freight.protocol.digests import parse_digest_header
from freight.protocol.metadata import safe_filename
from freight.server.body import content_length, interrupter, stream_body
from freight.server.errors import PROTOCOL_KEY
from freight.server.events import add_event_routes
from freight.server.metrics import METRICS, add_metrics
from freight.server.openapi import add_openapi_route
from freight.server.paging import next_cursor, parse_page_request
from freight.server.state import ENGINE, SETTINGS

__all__ = [
    "POLICY",
    "WIRE_BYTES",
    "ChunkLayout",
    "ChunkPolicy",
    "CreateRequest",
    "add_chunk_api",
    "chunk_checksum",
    "parse_complete_request",
    "parse_create_request",
    "upload_status",
]

KiB = 1024
MiB = 1024 * KiB
API_PREFIX = "/api/uploads"
MAX_NAME_LENGTH = 4096
MAX_SIZE = (1 << 63) - 1
MAX_JSON_BODY = 64 * KiB
_CHUNK_NUMBER = re.compile(r"[0-9]{1,19}")
_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")
# A chunk sent as a form would have its multipart framing written into the file.
_FORM_TYPES = ("multipart/", "application/x-www-form-urlencoded")
# Content-Digest algorithms (RFC 9530 names) and the hashlib names they map to.
_DIGEST_ALGORITHMS = (("sha-256", "sha256"), ("sha-512", "sha512"))
# Progress changes with every chunk: never let a cache answer for the server.
_NO_STORE = {"Cache-Control": "no-store"}

WIRE_BYTES: web.AppKey[dict[str, int]] = web.AppKey("freight.chunk_wire_bytes")
"""Every chunk body byte received per upload since start-up, duplicates included."""


@dataclass(frozen=True)
class ChunkPolicy:
    """How the server sizes chunks: what a client asks is clamped to ``[minimum, maximum]``,
    then raised so that no upload has more than ``max_count`` chunks (status stays short)."""

    default: int = 10 * MiB
    minimum: int = 256 * KiB
    maximum: int = 64 * MiB
    max_count: int = 100_000

    def choose(self, size: int, requested: int | None) -> int:
        wanted = self.default if requested is None else requested
        clamped = min(max(wanted, self.minimum), self.maximum)
        return max(clamped, -(-size // self.max_count))


POLICY = ChunkPolicy()


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


def layout_of(session: UploadSession) -> ChunkLayout | None:
    """The chunk layout of an upload created here; None for other protocols' uploads."""
    value = session.metadata.get("chunk_size")
    if session.length is None or not value or not value.isdigit() or int(value) <= 0:
        return None
    return ChunkLayout(session.length, int(value))


def require_layout(session: UploadSession) -> ChunkLayout:
    layout = layout_of(session)
    if layout is None:
        raise UploadNotFound(
            f"upload {session.id} was not created through {API_PREFIX}; use its own protocol"
        )
    return layout


# parsing requests (pure) ----------------------------------------------------------------


@dataclass(frozen=True)
class CreateRequest:
    """A validated ``POST /api/uploads`` body; ``name`` is already made safe to display."""

    name: str | None
    size: int
    chunk_size: int | None
    sha256: str | None


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
    return CreateRequest(safe_filename(name, "") or None, size, chunk_size, _sha256(fields))


def parse_complete_request(data: object) -> str | None:
    """The SHA-256 a completion expects, if it names one."""
    return _sha256(_object(data))


def parse_chunk_number(text: str) -> int:
    if not _CHUNK_NUMBER.fullmatch(text):
        raise BadRequest("a chunk number is a non-negative integer")
    return int(text)


def chunk_checksum(header: str | None) -> RequestChecksum | None:
    """What the chunk's writer checks before the chunk counts (``Content-Digest``, RFC 9530)."""
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


# responses ------------------------------------------------------------------------------


def _display_name(session: UploadSession) -> str | None:
    return safe_filename(session.name, "") or None


def _file_url(app: web.Application, upload_id: str) -> str:
    return f"{app[SETTINGS].base_path}{upload_id}"


def _percent(received: int, size: int | None) -> float | None:
    if size is None:
        return None
    if size == 0:
        return 100.0
    # Floored, so 100.0 always means every byte is there.
    return math.floor(10000 * received / size) / 100


def upload_status(app: web.Application, session: UploadSession) -> dict[str, Any]:
    """``GET /api/uploads/{id}``: where an upload of any protocol stands."""
    layout = layout_of(session)
    received = session.received.total()
    missing: list[list[int]] | None = None
    if layout is not None:
        missing = [] if session.is_finished else layout.missing(session.received)
    return {
        "id": session.id,
        "name": _display_name(session),
        "size": session.length,
        "received_bytes": received,
        "percent": _percent(received, session.length),
        "state": session.state.value,
        "created": session.created,
        "expires": session.expires,
        "chunk_size": layout.chunk_size if layout else None,
        "chunk_count": layout.count if layout else None,
        "missing": missing,
        "wire_bytes": app[WIRE_BYTES].get(session.id, 0),
        "sha256": session.sha256,
        "url": _file_url(app, session.id) if session.is_finished else None,
        "upload_url": f"{API_PREFIX}/{session.id}",
    }


def _incomplete(layout: ChunkLayout, session: UploadSession) -> UploadIncomplete:
    missing = layout.missing(session.received)
    count = sum(end - first for first, end in missing)
    return UploadIncomplete(f"{count} of {layout.count} chunks are missing", missing=missing)


async def _read_json(request: web.Request) -> object:
    """The JSON body; an empty body is an empty object."""
    declared = content_length(request)
    if declared is not None and declared > MAX_JSON_BODY:
        raise BadRequest(f"a JSON body is at most {MAX_JSON_BODY} bytes")
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise BadRequest("the body is not valid JSON") from exc


# handlers -------------------------------------------------------------------------------


async def create_upload(request: web.Request) -> web.Response:
    request[PROTOCOL_KEY] = "chunks"
    wanted = parse_create_request(await _read_json(request))
    chunk_size = POLICY.choose(wanted.size, wanted.chunk_size)
    metadata: dict[str, str | None] = {"filename": wanted.name, "chunk_size": str(chunk_size)}
    if wanted.sha256 is not None:
        metadata["sha256"] = wanted.sha256
    session = await request.app[ENGINE].create(
        length=wanted.size, metadata=metadata, client=request.remote
    )
    upload_url = f"{API_PREFIX}/{session.id}"
    body = {
        "id": session.id,
        "name": wanted.name,
        "size": wanted.size,
        "chunk_size": chunk_size,
        "chunk_count": ChunkLayout(wanted.size, chunk_size).count,
        "upload_url": upload_url,
        "expires": session.expires,
    }
    return web.json_response(body, status=201, headers={"Location": upload_url})


async def list_uploads(request: web.Request) -> web.Response:
    request[PROTOCOL_KEY] = "chunks"
    wanted = parse_page_request(request.query)
    page, more = await request.app[ENGINE].list_page("uploads", wanted.after, wanted.limit)
    body = {
        "uploads": [upload_status(request.app, session) for session in page],
        "next_cursor": next_cursor(page, more),
    }
    return web.json_response(body, headers=_NO_STORE)


async def get_upload(request: web.Request) -> web.Response:
    request[PROTOCOL_KEY] = "chunks"
    session = await request.app[ENGINE].get(request.match_info["upload_id"])
    return web.json_response(upload_status(request.app, session), headers=_NO_STORE)


async def delete_upload(request: web.Request) -> web.Response:
    request[PROTOCOL_KEY] = "chunks"
    engine = request.app[ENGINE]
    upload_id = request.match_info["upload_id"]
    session = await engine.get(upload_id)
    if session.is_finished:
        raise UploadCompleted(
            f"upload {upload_id} is finished; delete the file with DELETE /api/files/{upload_id}"
        )
    await engine.delete(upload_id)
    request.app[WIRE_BYTES].pop(upload_id, None)
    return web.Response(status=204)


async def complete_upload(request: web.Request) -> web.Response:
    request[PROTOCOL_KEY] = "chunks"
    engine = request.app[ENGINE]
    upload_id = request.match_info["upload_id"]
    session = await engine.get(upload_id)
    layout = require_layout(session)
    # A hash named now overrides one given at creation: the client knows more by now.
    expected = parse_complete_request(await _read_json(request)) or session.metadata.get("sha256")
    if not session.is_finished and not session.is_complete:
        raise _incomplete(layout, session)
    try:
        session = await engine.finish(upload_id, expected_sha256=expected)
    except UploadIncomplete as exc:
        raise _incomplete(layout, await engine.get(upload_id)) from exc
    body = {
        "file_id": session.id,
        "name": _display_name(session),
        "size": session.length,
        "sha256": session.sha256,
        "url": _file_url(request.app, session.id),
    }
    return web.json_response(body)


async def put_chunk(request: web.Request) -> web.Response:
    request[PROTOCOL_KEY] = "chunks"
    requests = request.app[METRICS].chunk_requests
    try:
        response, duplicate = await _put_chunk(request)
    except FreightError:
        requests.labels("rejected").inc()
        raise
    requests.labels("duplicate" if duplicate else "stored").inc()
    return response


async def _put_chunk(request: web.Request) -> tuple[web.Response, bool]:
    engine = request.app[ENGINE]
    upload_id = request.match_info["upload_id"]
    session = await engine.get(upload_id)
    layout = require_layout(session)
    n = parse_chunk_number(request.match_info["n"])
    start, end = layout.bounds(n)
    _check_body_headers(request, n, end - start)
    checksum = chunk_checksum(request.headers.get("Content-Digest"))
    counter = _WireCounter(request.app, upload_id)
    duplicate = session.is_finished or session.received.covers(start, end)
    if not duplicate:
        try:
            session = await _write_chunk(request, engine, (start, end), checksum, counter)
        except RangeAlreadyReceived:
            # Another request finished this chunk between our look and our claim.
            session = await engine.get(upload_id)
            if not session.received.covers(start, end):
                raise
            duplicate = True
    if duplicate:
        await _drain(request, end - start, counter)
    body = {
        "n": n,
        "duplicate": duplicate,
        "received_bytes": session.received.total(),
        "size": session.length,
        "wire_bytes": request.app[WIRE_BYTES].get(upload_id, 0),
    }
    return web.json_response(body), duplicate


def _check_body_headers(request: web.Request, n: int, length: int) -> None:
    """Refuse what the headers already show is wrong, before reading any of the body."""
    content_type = request.headers.get("Content-Type", "").strip().lower()
    if content_type.startswith(_FORM_TYPES):
        raise UnsupportedMediaType("send the chunk as the raw body (application/octet-stream)")
    declared = content_length(request)
    if declared is not None and declared != length:
        raise LengthMismatch(f"chunk {n} is {length} bytes, not {declared}", chunk_length=length)


class _WireCounter:
    """Counts body bytes as they arrive, for ``wire_bytes`` and the metrics."""

    def __init__(self, app: web.Application, upload_id: str) -> None:
        self._totals = app[WIRE_BYTES]
        self._metric = app[METRICS].chunk_body_bytes
        self._upload_id = upload_id

    def add(self, count: int) -> None:
        self._totals[self._upload_id] = self._totals.get(self._upload_id, 0) + count
        self._metric.inc(count)


async def _write_chunk(
    request: web.Request,
    engine: UploadEngine,
    span: tuple[int, int],
    checksum: RequestChecksum | None,
    counter: _WireCounter,
) -> UploadSession:
    start, end = span
    upload_id = request.match_info["upload_id"]
    # A chunk counts whole or not at all: a half-kept one would be neither missing nor
    # received, and its retry would be taken for a duplicate.
    async with engine.writer(
        upload_id,
        start,
        end=end,
        sequential=False,
        checksum=checksum,
        all_or_nothing=True,
        interrupt=interrupter(request),
    ) as writer:
        await _stream(request, writer, end, counter)
        return await writer.commit(expected_end=end)


async def _next_piece(request: web.Request, position: int) -> bytes:
    try:
        return await request.content.readany()
    except (ConnectionError, HttpProcessingError) as exc:
        raise ClientDisconnected(f"the body ended early at byte {position}: {exc}") from exc


async def _stream(
    request: web.Request, writer: UploadWriter, end: int, counter: _WireCounter
) -> None:
    try:
        await stream_body(request, writer, counter.add)
    except UploadTooLarge as exc:
        raise LengthMismatch(f"the body runs past the chunk's end at byte {end}") from exc


async def _drain(request: web.Request, length: int, counter: _WireCounter) -> None:
    """Read a duplicate chunk's body without keeping it, checking only its length."""
    got = 0
    while piece := await _next_piece(request, got):
        counter.add(len(piece))
        got += len(piece)
        if got > length:
            raise LengthMismatch(f"the body is longer than the chunk's {length} bytes")
    if got != length:
        raise LengthMismatch(f"the body has {got} bytes; the chunk has {length}")


def add_chunk_api(app: web.Application) -> None:
    """Register the chunk API, live events, metrics and the OpenAPI document on ``app``."""
    app[WIRE_BYTES] = {}
    add_metrics(app)
    router = app.router
    router.add_post(API_PREFIX, create_upload)
    router.add_get(API_PREFIX, list_uploads)
    router.add_get(API_PREFIX + "/{upload_id}", get_upload)
    router.add_delete(API_PREFIX + "/{upload_id}", delete_upload)
    router.add_put(API_PREFIX + "/{upload_id}/chunks/{n}", put_chunk)
    router.add_post(API_PREFIX + "/{upload_id}/complete", complete_upload)
    add_event_routes(app)
    add_openapi_route(app, POLICY)
