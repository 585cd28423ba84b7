"""tus 1.0.0 on aiohttp: a thin adapter from tus requests to the upload engine.

Extensions: creation, creation-with-upload, creation-defer-length, expiration, checksum,
termination, concatenation, concatenation-unfinished. Requests carrying
``Upload-Draft-Interop-Version`` are IETF resumable uploads and go to :mod:`.ietf`.
"""

from __future__ import annotations

from aiohttp import web

from freight.core import ConcatKind, UploadEngine, UploadSession, UploadState
from freight.core.writer import RequestChecksum
from freight.errors import InvalidHeader, MethodNotAllowed, UnsupportedMediaType
from freight.protocol import tus
from freight.protocol.checksum import CHECKSUM_ALGORITHMS, new_checksum
from freight.protocol.digests import build_repr_digest
from freight.protocol.metadata import build_upload_metadata
from freight.server.body import check_fits, digest_wanted, has_body, interrupter, stream_body
from freight.server.errors import PROTOCOL_KEY
from freight.server.logs import request_client
from freight.server.principals import GATE, principal_of
from freight.server.state import ENGINE, SETTINGS

__all__ = ["EXTENSIONS", "OVERRIDABLE_METHODS", "effective_method", "handle_tus"]

EXTENSIONS = (
    "creation",
    "creation-with-upload",
    "creation-defer-length",
    "expiration",
    "checksum",
    "termination",
    "concatenation",
    "concatenation-unfinished",
)
OFFSET_STREAM = "application/offset+octet-stream"


# What a POST may be turned into: the methods restrictive proxies and old browsers lack.
OVERRIDABLE_METHODS = frozenset({"PATCH", "DELETE", "POST"})


def effective_method(request: web.Request) -> str:
    """The method a tus or IETF request means.

    tus lets clients behind restrictive proxies tunnel PATCH and DELETE through POST with
    ``X-HTTP-Method-Override``. It is honoured on POST only (as tusd does): on any other
    method the header is ignored, so no header can turn a GET or HEAD, which a signed link
    may open, into something else. Callers read the resolved value from
    :func:`freight.server.dispatch.resolve`, never from here twice.
    """
    override = request.headers.get("X-HTTP-Method-Override")
    if request.method != "POST" or override is None:
        return request.method
    method = override.strip().upper()
    if method not in OVERRIDABLE_METHODS:
        raise InvalidHeader(
            "X-HTTP-Method-Override may only turn a POST into PATCH or DELETE",
            header="X-HTTP-Method-Override",
        )
    return method


async def handle_tus(request: web.Request, method: str) -> web.StreamResponse:
    request[PROTOCOL_KEY] = "tus"
    if method == "OPTIONS":
        return options(request)
    tus.check_tus_resumable(request.headers.get("Tus-Resumable"))
    upload_id = request.match_info.get("upload_id")
    if upload_id is None:
        if method == "POST":
            return await create(request)
        raise MethodNotAllowed(f"{method} is not allowed on the upload collection")
    handlers = {"HEAD": head, "PATCH": patch, "DELETE": delete}
    handler = handlers.get(method)
    if handler is None:
        raise MethodNotAllowed(f"{method} is not allowed on an upload")
    return await handler(request, upload_id)


def options(request: web.Request) -> web.Response:
    headers = tus.options_headers(
        extensions=EXTENSIONS,
        max_size=request.app[SETTINGS].max_size,
        checksum_algorithms=CHECKSUM_ALGORITHMS,
    )
    headers["Tus-Resumable"] = tus.TUS_VERSION
    return web.Response(status=204, headers=headers)


def upload_url(request: web.Request, upload_id: str) -> str:
    return f"{request.app[SETTINGS].files_path}{upload_id}"


def state_headers(session: UploadSession) -> dict[str, str]:
    headers = {"Tus-Resumable": tus.TUS_VERSION, "Cache-Control": "no-store"}
    assembling = session.state is UploadState.ASSEMBLING
    if not assembling:
        headers["Upload-Offset"] = str(session.offset)
    # Only an unfinished upload expires; one answered before its finish settles has all
    # its bytes already, and will not.
    unfinished = session.state is UploadState.RECEIVING and session.offset != session.length
    if session.expires is not None and unfinished:
        headers["Upload-Expires"] = tus.format_http_date(session.expires)
    if session.sha256 is not None:
        headers["Repr-Digest"] = build_repr_digest(session.sha256)
    return headers


async def create(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    settings = request.app[SETTINGS]
    creation = tus.parse_creation_headers(
        request.headers, settings.max_size, base_path=settings.files_path
    )
    principal = principal_of(request)
    if creation.concat is not None and creation.concat.kind == "final":
        # Its parts leave the owner's count as it enters it: no quota to check.
        await request.app[GATE].may_use(principal, creation.concat.part_ids, engine.sessions)
        session = await engine.create_final(
            creation.concat.part_ids, creation.metadata, principal.owner
        )
    else:
        kind = ConcatKind.PARTIAL if creation.concat is not None else None
        async with request.app[GATE].creating(principal, creation.length):
            session = await engine.create(
                length=creation.length,
                metadata=creation.metadata,
                concat_kind=kind,
                client=request_client(request),
                owner=principal.owner,
            )
        if has_body(request):
            session = await write_body(request, engine, session, 0)
        elif session.length == 0:
            session = await engine.finish(session.id)
    headers = state_headers(session)
    headers["Location"] = upload_url(request, session.id)
    return web.Response(status=201, headers=headers)


async def head(request: web.Request, upload_id: str) -> web.Response:
    session = await request.app[ENGINE].get(upload_id)
    headers = state_headers(session)
    if session.length is not None:
        headers["Upload-Length"] = str(session.length)
    else:
        headers["Upload-Defer-Length"] = "1"
    if session.metadata:
        headers["Upload-Metadata"] = build_upload_metadata(session.metadata)
    if session.concat_kind is ConcatKind.PARTIAL:
        headers["Upload-Concat"] = "partial"
    elif session.concat_kind is ConcatKind.FINAL:
        concat = tus.ConcatRequest(kind="final", part_ids=session.concat_parts)
        headers["Upload-Concat"] = tus.build_upload_concat(concat, request.app[SETTINGS].files_path)
    return web.Response(status=200, headers=headers)


async def patch(request: web.Request, upload_id: str) -> web.Response:
    engine = request.app[ENGINE]
    offset = tus.parse_offset(request.headers.get("Upload-Offset"))
    session = await engine.get(upload_id)
    declared = tus.parse_length(request.headers.get("Upload-Length"))
    if declared is not None and declared != session.length:
        # Only a change needs the upload to itself: a retry restating the length must
        # still be able to take over from a stalled request.
        session = await engine.declare_length(
            upload_id, declared, interrupt=interrupter(request), offset=offset
        )
    session = await write_body(request, engine, session, offset)
    return web.Response(status=204, headers=state_headers(session))


async def write_body(
    request: web.Request, engine: UploadEngine, session: UploadSession, offset: int
) -> UploadSession:
    """Append the request body at ``offset`` and finish the upload once it is complete."""
    content_type = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if content_type != OFFSET_STREAM:
        raise UnsupportedMediaType(f"Content-Type must be {OFFSET_STREAM}")
    check_fits(offset, request, session.length)
    checksum = request_checksum(request)
    async with engine.writer(
        session.id, offset, checksum=checksum, interrupt=interrupter(request)
    ) as writer:
        await stream_body(request, writer)
        session = await writer.commit()
    if session.is_complete:
        session = await engine.finish(session.id, digest_needed=digest_wanted(request))
    return session


def request_checksum(request: web.Request) -> RequestChecksum | None:
    header = request.headers.get("Upload-Checksum")
    if header is None:
        return None
    algorithm, expected = tus.parse_upload_checksum(header)
    return RequestChecksum(algorithm, expected, new_checksum(algorithm))


async def delete(request: web.Request, upload_id: str) -> web.Response:
    await request.app[ENGINE].delete(upload_id)
    return web.Response(status=204, headers={"Tus-Resumable": tus.TUS_VERSION})
