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
or a piece past its chunk's end (``Content-Range: bytes */<chunk length>``); 417 an
``Expect`` other than ``100-continue``; 422 a
``Content-Digest`` or expected SHA-256 that does not match (the data is kept); 423 the same
chunk is being written by another request right now; 507 not enough disk.
"""

from __future__ import annotations

import json
import math
from typing import Any

from aiohttp import web

from freight.core import UploadSession
from freight.core.blobs import PartSized
from freight.errors import BadRequest, UploadCompleted, UploadIncomplete
from freight.protocol.metadata import safe_filename, with_relative_path
from freight.server.body import content_length
from freight.server.chunk_layout import (
    API_PREFIX,
    POLICY,
    ChunkLayout,
    ChunkPolicy,
    CreateRequest,
    chunk_checksum,
    layout_of,
    parse_complete_request,
    parse_create_request,
    require_layout,
)
from freight.server.chunk_put import WIRE_BYTES, expect_when_ready, put_chunk
from freight.server.errors import PROTOCOL_KEY
from freight.server.events import add_event_routes
from freight.server.logs import request_client
from freight.server.metrics import add_metrics
from freight.server.openapi import add_openapi_route
from freight.server.paging import next_cursor, parse_page_request
from freight.server.principals import GATE, listing_owner, principal_of
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
# Progress changes with every chunk: never let a cache answer for the server.
_NO_STORE = {"Cache-Control": "no-store"}


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
        "min_piece_size": POLICY.min_piece_on(app[ENGINE].blobs) if layout else None,
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
    principal = principal_of(request)
    async with request.app[GATE].creating(principal, wanted.size):
        session = await engine.create(
            length=wanted.size,
            metadata=with_relative_path({"filename": wanted.name}, wanted.relative_path),
            client=request_client(request),
            chunk_size=chunk_size,
            declared_sha256=wanted.sha256,
            owner=principal.owner,
        )
    upload_url = f"{API_PREFIX}/{session.id}"
    body = {
        "id": session.id,
        "name": wanted.name,
        "size": wanted.size,
        "chunk_size": chunk_size,
        "chunk_count": ChunkLayout(wanted.size, chunk_size).count,
        "min_piece_size": POLICY.min_piece_on(engine.blobs),
        "upload_url": upload_url,
        "expires": session.expires,
    }
    return web.json_response(body, status=201, headers={"Location": upload_url})


async def list_uploads(request: web.Request) -> web.Response:
    request[PROTOCOL_KEY] = "chunks"
    wanted = parse_page_request(request.query)
    owner = listing_owner(principal_of(request))
    page, more = await request.app[ENGINE].list_page("uploads", wanted.after, wanted.limit, owner)
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
        API_PREFIX + "/{upload_id}/chunks/{n}", put_chunk, expect_handler=expect_when_ready
    )
    router.add_post(API_PREFIX + "/{upload_id}/complete", complete_upload)
    add_event_routes(app)
    add_openapi_route(app, POLICY)
