"""The chunk upload API at ``/api/uploads``: a thin JSON adapter over the upload engine.

Made for browsers and proxies that cap request bodies (100 MB is common): the client
creates an upload, PUTs fixed-size chunks in any order and several at once, asks which
chunks are missing, and completes it with the SHA-256 it expects.

* ``POST /api/uploads`` ``{name, size, chunk_size?, sha256?}`` → 201
  ``{id, name, size, chunk_size, chunk_count, min_piece_size, upload_url, expires}``. The
  server picks the chunk size (:class:`ChunkPolicy`); the client must use the one it is given.
* ``PUT /api/uploads/{id}/chunks/{n}``: the raw bytes of chunk ``n`` (0-based), written
  in place at ``n * chunk_size`` of the upload's single part file: no chunk files and no
  merge. One already received is drained unwritten and answered 200 with
  ``duplicate: true``. ``Content-Digest`` (RFC 9530, sha-256 or sha-512) is checked
  before the chunk is acknowledged.
* A PUT that is cut keeps what arrived of its body (as tus does): it shows in
  ``missing_bytes`` like a partly sent chunk, and the rest can follow as a piece. A PUT
  with a ``Content-Digest`` counts whole or not at all instead, since part of a body
  cannot be checked against it.
* A whole chunk PUT of a chunk partly received (a cut retried whole, by a client that does
  not send pieces) is taken: the body's bytes the server holds already are read and
  dropped, not compared or rewritten (the whole-file SHA-256 at ``complete`` vouches for
  them; a ``Content-Digest`` still covers the whole body), and the rest is written.
* ``Expect: 100-continue`` is answered once the body is wanted, not at once: a duplicate,
  a refused piece, or a chunk whose bytes a cut request (perhaps on another node) turns out
  to have kept meanwhile, is answered before any of the body is sent.
* Pieces, for links that drop connections more often than a chunk takes to send: the same
  PUT with ``Content-Range: bytes first-last/<chunk length>`` (offsets counted from the
  chunk's first byte) carries part of a chunk. One already received is a 200 duplicate;
  ``Content-Digest`` then covers the piece. A piece must start where the chunk's received
  bytes end (409 ``ERR_PIECE_OFFSET`` with ``chunk_offset`` otherwise; the rule keeps each
  chunk's received bytes one run) and be at least ``min_piece_size`` bytes unless it ends
  the chunk. A chunk counts as received once all its bytes are.
* ``GET /api/uploads/{id}``: progress; ``missing`` lists *half-open* chunk ranges
  ``[first, end)``, so ``[[0, 2], [5, 6]]`` means chunks 0, 1 and 5; ``missing_bytes``
  lists the half-open byte ranges (file offsets) still missing from chunks partly received
  through pieces, each inside one chunk.
* ``POST /api/uploads/{id}/complete`` ``{sha256?}`` → ``{file_id, name, size, sha256, url}``.
* ``DELETE /api/uploads/{id}`` → 204; ``GET /api/uploads`` lists uploads in progress of
  every protocol.

Statuses (mapped in :mod:`freight.server.errors` for protocol ``"chunks"``): 400 malformed
JSON, field or header, a body of the wrong length or a piece too short; 404 unknown upload;
409 completing with chunks missing (``missing`` and ``missing_bytes`` in the body), aborting
a finished upload, or a piece that does not follow its chunk's received bytes; 410 expired;
413 over ``--max-size``; 415 a form-encoded chunk; 416 a chunk number past the last chunk,
or a piece past its chunk's end (``Content-Range: bytes */<chunk length>``); 422 a
``Content-Digest`` or expected SHA-256 that does not match (the data is kept); 423 the same
chunk is being written by another request right now; 507 not enough disk.
"""

from __future__ import annotations

import json
import math
from typing import Any

from aiohttp import HttpVersion11, web
from aiohttp.http_exceptions import HttpProcessingError

from freight.core import UploadEngine, UploadSession, UploadWriter
from freight.core.blobs import PartSized
from freight.core.writer import RequestChecksum
from freight.errors import (
    BadRequest,
    ClientDisconnected,
    FreightError,
    LengthMismatch,
    RangeAlreadyReceived,
    UnsupportedMediaType,
    UploadCompleted,
    UploadIncomplete,
    UploadTooLarge,
)
from freight.protocol.metadata import safe_filename
from freight.server.body import content_length, interrupter, stream_body
from freight.server.chunk_layout import (
    API_PREFIX,
    POLICY,
    ChunkLayout,
    ChunkPolicy,
    CreateRequest,
    Piece,
    chunk_checksum,
    layout_of,
    parse_chunk_number,
    parse_complete_request,
    parse_create_request,
    require_layout,
)
from freight.server.errors import PROTOCOL_KEY
from freight.server.events import add_event_routes
from freight.server.logs import request_client
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

MAX_JSON_BODY = 64 * 1024
# A chunk sent as a form would have its multipart framing written into the file.
_FORM_TYPES = ("multipart/", "application/x-www-form-urlencoded")
# Progress changes with every chunk: never let a cache answer for the server.
_NO_STORE = {"Cache-Control": "no-store"}
# How often a chunk PUT looks again when bytes it was to write got recorded meanwhile.
_LOOKS = 3
# Bytes of an already received prefix read (and dropped) at a time.
_SKIP_READ = 256 * 1024

_CONTINUE_LATER: web.RequestKey[bool] = web.RequestKey("freight.chunk_continue_later", bool)
"""Set while a request that sent ``Expect: 100-continue`` has not been asked for its body."""

WIRE_BYTES: web.AppKey[dict[str, int]] = web.AppKey("freight.chunk_wire_bytes")
"""Every chunk body byte received per upload since start-up, duplicates included."""


# responses ------------------------------------------------------------------------------


def _display_name(session: UploadSession) -> str | None:
    return safe_filename(session.name, "") or None


def _file_url(app: web.Application, upload_id: str) -> str:
    return f"{app[SETTINGS].files_path}{upload_id}"


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
    missing_bytes: list[list[int]] | None = None
    if layout is not None:
        missing = [] if session.is_finished else layout.missing(session.received)
        missing_bytes = [] if session.is_finished else layout.missing_bytes(session.received)
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
        "missing_bytes": missing_bytes,
        "min_piece_size": POLICY.min_piece if layout else None,
        "wire_bytes": app[WIRE_BYTES].get(session.id, 0),
        "sha256": session.sha256,
        "url": _file_url(app, session.id) if session.is_finished else None,
        "upload_url": f"{API_PREFIX}/{session.id}",
    }


def _incomplete(layout: ChunkLayout, session: UploadSession) -> UploadIncomplete:
    missing = layout.missing(session.received)
    count = sum(end - first for first, end in missing)
    return UploadIncomplete(
        f"{count} of {layout.count} chunks are missing",
        missing=missing,
        missing_bytes=layout.missing_bytes(session.received),
    )


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
    engine = request.app[ENGINE]
    if isinstance(engine.blobs, PartSized):
        # A chunk is one of the store's parts: parallel chunks go straight to parts.
        chunk_size = engine.blobs.part_size
    else:
        chunk_size = POLICY.choose(wanted.size, wanted.chunk_size)
    session = await engine.create(
        length=wanted.size,
        metadata={"filename": wanted.name},
        client=request_client(request),
        chunk_size=chunk_size,
        declared_sha256=wanted.sha256,
    )
    upload_url = f"{API_PREFIX}/{session.id}"
    body = {
        "id": session.id,
        "name": wanted.name,
        "size": wanted.size,
        "chunk_size": chunk_size,
        "chunk_count": ChunkLayout(wanted.size, chunk_size).count,
        "min_piece_size": POLICY.min_piece,
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
    expected = parse_complete_request(await _read_json(request)) or session.declared_sha256
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
    finally:
        if request.get(_CONTINUE_LATER):
            # Answered before the body was asked for: the client sends none of it, so the
            # connection cannot carry another request.
            request.protocol.close()
    requests.labels("duplicate" if duplicate else "stored").inc()
    return response


async def _expect_when_ready(request: web.Request) -> None:
    """``Expect: 100-continue`` on a chunk PUT: the ``100 Continue`` goes out only once the
    body is wanted (:func:`_continue`), after the claim is taken, so a duplicate, or bytes a
    cut request turns out to have kept, are answered before any of the body is sent."""
    expect = request.headers.get("Expect", "")
    if request.version != HttpVersion11:
        return
    if expect.lower() != "100-continue":
        raise web.HTTPExpectationFailed(text=f"Unknown Expect: {expect}")
    request[_CONTINUE_LATER] = True


async def _continue(request: web.Request) -> None:
    """Ask for the body, if the client waits to be asked."""
    if request.get(_CONTINUE_LATER):
        request[_CONTINUE_LATER] = False
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0


async def _put_chunk(request: web.Request) -> tuple[web.Response, bool]:
    engine = request.app[ENGINE]
    upload_id = request.match_info["upload_id"]
    session = await engine.get(upload_id)
    layout = require_layout(session)
    n = parse_chunk_number(request.match_info["n"])
    piece = layout.piece(n, request.headers.get("Content-Range"), POLICY.min_piece)
    _check_body_headers(request, piece)
    checksum = chunk_checksum(request.headers.get("Content-Digest"))
    counter = _WireCounter(request.app, upload_id)
    kept = None if session.is_finished else layout.check_piece(piece, session.received)
    for look in range(1, _LOOKS + 1):
        if kept is None:
            break
        try:
            session = await _write_chunk(request, engine, piece, kept, checksum, counter)
            break
        except RangeAlreadyReceived:
            # Another request recorded some of these bytes between our look and our claim
            # (a cut one keeping what it got, or a twin of this one): look again, as long
            # as none of the body was read.
            if counter.count or look == _LOOKS:
                raise
            session = await engine.get(upload_id)
            kept = layout.check_piece(piece, session.received)
    duplicate = kept is None
    if duplicate and not request.get(_CONTINUE_LATER):
        await _drain(request, piece.length, counter)
    body = {
        "n": n,
        "duplicate": duplicate,
        "chunk_complete": session.is_finished
        or session.received.covers(piece.chunk_start, piece.chunk_end),
        "received_bytes": session.received.total(),
        "size": session.length,
        "wire_bytes": request.app[WIRE_BYTES].get(upload_id, 0),
    }
    return web.json_response(body), duplicate


def _check_body_headers(request: web.Request, piece: Piece) -> None:
    """Refuse what the headers already show is wrong, before reading any of the body."""
    content_type = request.headers.get("Content-Type", "").strip().lower()
    if content_type.startswith(_FORM_TYPES):
        raise UnsupportedMediaType("send the chunk as the raw body (application/octet-stream)")
    declared = content_length(request)
    if declared is not None and declared != piece.length:
        raise LengthMismatch(
            f"{piece.describe()} is {piece.length} bytes, not {declared}",
            chunk_length=piece.length,
        )


class _WireCounter:
    """Counts body bytes as they arrive, for ``wire_bytes``, the metrics and ``count``
    (this request's)."""

    def __init__(self, app: web.Application, upload_id: str) -> None:
        self._totals = app[WIRE_BYTES]
        self._metric = app[METRICS].chunk_body_bytes
        self._upload_id = upload_id
        self.count = 0

    def add(self, count: int) -> None:
        self.count += count
        self._totals[self._upload_id] = self._totals.get(self._upload_id, 0) + count
        self._metric.inc(count)


async def _write_chunk(
    request: web.Request,
    engine: UploadEngine,
    piece: Piece,
    kept: int,
    checksum: RequestChecksum | None,
    counter: _WireCounter,
) -> UploadSession:
    """Write ``piece`` but its first ``kept`` bytes (received already: read and dropped).

    What arrives before a cut is kept, as tus keeps it, so the chunk's retry sends only the
    rest; a body of the wrong length keeps nothing, nor does one with a ``Content-Digest``
    unless all of it matches. The written bytes start where the chunk's received run ends,
    so they extend it.
    """
    start, end = piece.start + kept, piece.end
    upload_id = request.match_info["upload_id"]
    async with engine.writer(
        upload_id,
        start,
        end=end,
        sequential=False,
        checksum=checksum,
        interrupt=interrupter(request),
    ) as writer:
        try:
            await _continue(request)
            if kept:
                await _skip(request, kept, counter, checksum)
            await _stream(request, writer, end, counter, kept)
            return await writer.commit(expected_end=end)
        except LengthMismatch:
            # A body that ended (or ran on) cleanly at the wrong length was not cut: it is a
            # malformed request, and none of it counts.
            writer.yield_from(start)
            raise


async def _skip(
    request: web.Request, count: int, counter: _WireCounter, checksum: RequestChecksum | None
) -> None:
    """Read and drop the body's first ``count`` bytes; a digest of the body still covers them."""
    left = count
    while left:
        data = await _read_up_to(request, min(left, _SKIP_READ), count - left)
        if not data:
            raise LengthMismatch(f"the body has {count - left} bytes; {count} were expected")
        counter.add(len(data))
        if checksum is not None:
            checksum.hasher.update(data)
        left -= len(data)


async def _read_up_to(request: web.Request, size: int, position: int) -> bytes:
    try:
        return await request.content.read(size)
    except (ConnectionError, HttpProcessingError) as exc:
        raise ClientDisconnected(f"the body ended early at byte {position}: {exc}") from exc


async def _next_piece(request: web.Request, position: int) -> bytes:
    try:
        return await request.content.readany()
    except (ConnectionError, HttpProcessingError) as exc:
        raise ClientDisconnected(f"the body ended early at byte {position}: {exc}") from exc


async def _stream(
    request: web.Request, writer: UploadWriter, end: int, counter: _WireCounter, skipped: int
) -> None:
    try:
        await stream_body(request, writer, counter.add, skipped=skipped)
    except UploadTooLarge as exc:
        raise LengthMismatch(f"the body runs past its end at byte {end}") from exc


async def _drain(request: web.Request, length: int, counter: _WireCounter) -> None:
    """Read a duplicate chunk's body without keeping it, checking only its length."""
    got = 0
    while piece := await _next_piece(request, got):
        counter.add(len(piece))
        got += len(piece)
        if got > length:
            raise LengthMismatch(f"the body has more than the {length} bytes expected")
    if got != length:
        raise LengthMismatch(f"the body has {got} bytes; {length} were expected")


def add_chunk_api(app: web.Application) -> None:
    """Register the chunk API, live events, metrics and the OpenAPI document on ``app``."""
    app[WIRE_BYTES] = {}
    add_metrics(app)
    router = app.router
    router.add_post(API_PREFIX, create_upload)
    router.add_get(API_PREFIX, list_uploads)
    router.add_get(API_PREFIX + "/{upload_id}", get_upload)
    router.add_delete(API_PREFIX + "/{upload_id}", delete_upload)
    router.add_put(
        API_PREFIX + "/{upload_id}/chunks/{n}", put_chunk, expect_handler=_expect_when_ready
    )
    router.add_post(API_PREFIX + "/{upload_id}/complete", complete_upload)
    add_event_routes(app)
    add_openapi_route(app, POLICY)
