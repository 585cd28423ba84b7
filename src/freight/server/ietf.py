"""IETF resumable uploads on aiohttp: a thin adapter from the draft to the upload engine.

Requests carrying ``Upload-Draft-Interop-Version`` (3-8) arrive here from
:func:`freight.server.app.files_endpoint`; :mod:`freight.protocol.ietf` parses and builds every
header, the engine stores the bytes, :mod:`freight.server.errors` turns failures into answers.
POST to the collection creates, HEAD reports the offset, PATCH appends, DELETE cancels,
OPTIONS announces limits. Every answer echoes the interop version and none carries
``Tus-Resumable``.

Choices where the drafts leave room (``docs/ietf-resumable-uploads.md`` has the tables):

* The ``104 Upload Resumption Supported`` goes out on HTTP/1.1 only, once, on a creation with
  a body, before the body is read (after aiohttp's own ``100 Continue``, which it sends before
  any handler runs). There are no progress 104s.
* An upload is finished when a request says it is complete (a deferred length becomes the
  bytes received), or as soon as its known length is reached, even by a request that said
  ``Upload-Complete: ?0``: tus-js-client sends ``?0`` on the last chunk of a file and never
  completes an empty upload, and stops once ``Upload-Offset`` equals the length. The answer
  then says ``?1``, though interop 7 asks for ``?0`` there.
* An append to a finished upload is 400 ``completed-upload`` from interop 6, and a 409 with
  the final ``Upload-Offset`` before (no problem types yet; clients re-check with HEAD).
* ``Upload-Limit`` carries ``max-size`` when the server has one and ``max-age``
  (``expires`` in interop 6) as the seconds left before an idle upload expires.
"""

from __future__ import annotations

import email.message
from collections.abc import Mapping

from aiohttp import HttpVersion11, web

from freight.core import UploadEngine, UploadSession
from freight.errors import MethodNotAllowed, OffsetMismatch, UploadCompleted, UploadTooLarge
from freight.protocol import ietf
from freight.protocol.digests import build_repr_digest
from freight.protocol.metadata import parse_upload_metadata
from freight.server.body import (
    check_fits,
    content_length,
    digest_wanted,
    has_body,
    interrupter,
    stream_body,
)
from freight.server.errors import PROTOCOL_KEY
from freight.server.logs import request_client
from freight.server.principals import GATE, principal_of
from freight.server.state import ENGINE, SETTINGS

__all__ = ["handle_ietf"]


async def handle_ietf(request: web.Request, method: str, version: int) -> web.StreamResponse:
    """Serve one IETF request; ``method`` is after ``X-HTTP-Method-Override``."""
    request[PROTOCOL_KEY] = ("ietf", version)
    req = ietf.parse_ietf_request(method, request.headers)
    if req.action == "options":
        return options(request, version)
    upload_id = request.match_info.get("upload_id")
    if upload_id is None:
        if req.action == "create":
            return await create(request, req)
        raise MethodNotAllowed(f"{method} needs an upload URL, not the collection")
    if req.action == "create":
        raise MethodNotAllowed("uploads are created by a POST to the collection")
    if req.action == "offset":
        return await retrieve_offset(request, req, upload_id)
    if req.action == "append":
        return await append(request, req, upload_id)
    return await cancel(request, req, upload_id)


def options(request: web.Request, version: int) -> web.Response:
    name, value = ietf.ACCEPT_PATCH
    headers = {ietf.INTEROP_HEADER: str(version), name: value}
    if ietf.draft_features(version).has_upload_limit:
        headers["Upload-Limit"] = upload_limit(request.app[ENGINE], version)
    return web.Response(status=200, headers=headers)


async def create(request: web.Request, req: ietf.IetfRequest) -> web.Response:
    engine = request.app[ENGINE]
    check_max_size(request, engine.max_size)
    principal = principal_of(request)
    async with request.app[GATE].creating(principal, req.length):
        session = await engine.create(
            length=req.length,
            metadata=creation_metadata(request.headers),
            client=request_client(request),
            owner=principal.owner,
        )
    location = f"{request.app[SETTINGS].files_path}{session.id}"
    limit = upload_limit(engine, req.version, session)
    if has_body(request):
        send_interim(request, location, req.version, limit)
        session = await write_body(request, engine, req, session)
    session = await settle(engine, req, session, digest_wanted(request))
    headers = state_headers(session, req.version, limit)
    headers["Location"] = location
    return web.Response(status=201, headers=headers)


async def retrieve_offset(
    request: web.Request, req: ietf.IetfRequest, upload_id: str
) -> web.Response:
    engine = request.app[ENGINE]
    session = await engine.get(upload_id)
    headers = ietf.offset_response_headers(
        session.offset,
        session.length,
        session.is_finished,
        req.version,
        upload_limit=upload_limit(engine, req.version, session),
    )
    if session.sha256 is not None:
        headers["Repr-Digest"] = build_repr_digest(session.sha256)
    return web.Response(status=204, headers=headers)


async def append(request: web.Request, req: ietf.IetfRequest, upload_id: str) -> web.Response:
    engine = request.app[ENGINE]
    features = ietf.draft_features(req.version)
    session = await engine.get(upload_id)
    if session.is_finished:
        message = "this upload is complete and takes no more bytes"
        if features.has_problem_types:
            raise UploadCompleted(message)
        raise OffsetMismatch(message, offset=session.offset, provided_offset=req.offset)
    if req.length is not None and req.length != session.length:
        # Only a change needs the upload to itself: a retry restating the length must
        # still be able to take over from a stalled request.
        session = await engine.declare_length(upload_id, req.length)
    if req.offset != session.offset:
        raise OffsetMismatch(
            f"the upload is at offset {session.offset}, not {req.offset}",
            offset=session.offset,
            provided_offset=req.offset,
        )
    session = await write_body(request, engine, req, session)
    session = await settle(engine, req, session, digest_wanted(request))
    headers = state_headers(session, req.version, upload_limit(engine, req.version, session))
    return web.Response(status=features.append_status, headers=headers)


async def cancel(request: web.Request, req: ietf.IetfRequest, upload_id: str) -> web.Response:
    await request.app[ENGINE].delete(upload_id)
    return web.Response(status=204, headers={ietf.INTEROP_HEADER: str(req.version)})


# --- helpers ---------------------------------------------------------------------------------


def check_max_size(request: web.Request, max_size: int | None) -> None:
    """Refuse a creation body longer than the server takes (a known length: the engine)."""
    size = content_length(request)
    if max_size is not None and size is not None and size > max_size:
        raise UploadTooLarge(
            f"{size} bytes is more than this server accepts ({max_size})", max_size=max_size
        )


def creation_metadata(headers: Mapping[str, str]) -> dict[str, str | None]:
    """tus-style ``Upload-Metadata`` (tus-js-client sends it), else the
    ``Content-Disposition`` file name the drafts recommend."""
    encoded = headers.get("Upload-Metadata")
    if encoded is not None:
        return parse_upload_metadata(encoded)
    disposition = headers.get("Content-Disposition")
    if not disposition:
        return {}
    message = email.message.Message()
    message["Content-Disposition"] = disposition
    name = message.get_filename()
    return {"filename": name} if name else {}


def upload_limit(engine: UploadEngine, version: int, session: UploadSession | None = None) -> str:
    """``Upload-Limit``: the size cap, and the seconds an idle upload (a new one if
    ``session`` is None) has before it expires; a finished upload no longer expires."""
    if session is None:
        age: float | None = engine.expire_after
    else:
        age = None if session.expires is None else session.expires - engine.clock()
    return ietf.upload_limit_header(
        max_size=engine.max_size,
        max_append_size=None,
        min_append_size=None,
        max_age=None if age is None else max(0, int(age)),
        version=version,
    )


def send_interim(request: web.Request, location: str, version: int, limit: str) -> None:
    """Write the 104 straight to the transport: aiohttp has no API for 1xx but 100."""
    transport = request.transport
    if request.version != HttpVersion11 or transport is None or transport.is_closing():
        return  # an HTTP/1.0 client must never see a 1xx (RFC 9110 section 15.2)
    headers = ietf.interim_104_headers(location, version, upload_limit=limit)
    transport.write(ietf.interim_response_bytes(headers))


async def write_body(
    request: web.Request, engine: UploadEngine, req: ietf.IetfRequest, session: UploadSession
) -> UploadSession:
    """Append the body at the request's offset; a completing body must reach a known length."""
    start = req.offset or 0
    check_fits(start, request, session.length)
    end = session.length if req.complete else None
    async with engine.writer(session.id, start, interrupt=interrupter(request)) as writer:
        await stream_body(request, writer)
        return await writer.commit(expected_end=end)


async def settle(
    engine: UploadEngine, req: ietf.IetfRequest, session: UploadSession, digest_needed: bool
) -> UploadSession:
    """Fix a deferred length the request completed, and finish the upload when it is due
    (in the background unless ``digest_needed``: then it is complete, not yet finished)."""
    if req.complete and session.length is None:
        session = await engine.declare_length(session.id, session.offset)
    if session.is_complete:
        session = await engine.finish(session.id, digest_needed=digest_needed)
    return session


def state_headers(session: UploadSession, version: int, limit: str) -> dict[str, str]:
    headers = ietf.upload_state_headers(
        offset=session.offset,
        # After settle(): a complete upload is finished or being finished.
        complete=session.is_finished or session.is_complete,
        version=version,
        length=session.length,
        upload_limit=limit,
    )
    if session.sha256 is not None:
        headers["Repr-Digest"] = build_repr_digest(session.sha256)
    return headers
