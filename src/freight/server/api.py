"""JSON endpoints beside the upload protocols: health, stored files."""

from __future__ import annotations

from aiohttp import web

from freight.core import UploadSession
from freight.errors import BadRequest
from freight.server.paging import next_cursor, parse_page_request
from freight.server.principals import listing_owner, principal_of
from freight.server.state import ENGINE, SETTINGS

__all__ = ["add_api_routes"]


def file_entry(request: web.Request, session: UploadSession) -> dict[str, object]:
    return {
        "id": session.id,
        "name": session.name,
        "size": session.length,
        "sha256": session.sha256,
        "created": session.finished or session.created,
        "url": f"{request.app[SETTINGS].files_path}{session.id}",
    }


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def list_files(request: web.Request) -> web.Response:
    """One page of finished files, oldest first; ``next_cursor`` asks for the next page.

    With ``size`` (and ``sha256``): only a file of that size (and SHA-256), if there is one
    (``files`` holds at most one entry), so a client can skip sending what is stored; it
    hashes a file first only when the server holds one of the same size.
    """
    if "size" in request.query or "sha256" in request.query:
        return await _file_by_digest(request)
    wanted = parse_page_request(request.query)
    owner = listing_owner(principal_of(request))
    page, more = await request.app[ENGINE].list_page("files", wanted.after, wanted.limit, owner)
    files = [file_entry(request, s) for s in page]
    return web.json_response({"files": files, "next_cursor": next_cursor(page, more)})


_MAX_SIZE_DIGITS = 20  # more than any 64-bit size


async def _file_by_digest(request: web.Request) -> web.Response:
    size, sha256 = request.query.get("size", ""), request.query.get("sha256")
    if not (size.isdigit() and len(size) <= _MAX_SIZE_DIGITS):
        raise BadRequest("size must be a whole number of bytes (sha256 goes with a size)")
    if sha256 is not None:
        sha256 = sha256.lower()
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise BadRequest("sha256 must be 64 hexadecimal digits")
    owner = listing_owner(principal_of(request))
    engine = request.app[ENGINE]
    await engine.finishes_settled()
    found = await engine.sessions.find_finished(int(size), sha256, owner)
    files = [file_entry(request, found)] if found is not None else []
    return web.json_response({"files": files, "next_cursor": None})


async def delete_file(request: web.Request) -> web.Response:
    await request.app[ENGINE].delete(request.match_info["upload_id"])
    return web.Response(status=204)


def add_api_routes(app: web.Application) -> None:
    app.router.add_get("/health", health)
    app.router.add_get("/api/files", list_files)
    app.router.add_delete("/api/files/{upload_id}", delete_file)
