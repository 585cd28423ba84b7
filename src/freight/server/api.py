"""JSON endpoints beside the upload protocols: health, stored files."""

from __future__ import annotations

from aiohttp import web

from freight.core import UploadSession
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
    """One page of finished files, oldest first; ``next_cursor`` asks for the next page."""
    wanted = parse_page_request(request.query)
    owner = listing_owner(principal_of(request))
    page, more = await request.app[ENGINE].list_page("files", wanted.after, wanted.limit, owner)
    files = [file_entry(request, s) for s in page]
    return web.json_response({"files": files, "next_cursor": next_cursor(page, more)})


async def delete_file(request: web.Request) -> web.Response:
    await request.app[ENGINE].delete(request.match_info["upload_id"])
    return web.Response(status=204)


def add_api_routes(app: web.Application) -> None:
    app.router.add_get("/health", health)
    app.router.add_get("/api/files", list_files)
    app.router.add_delete("/api/files/{upload_id}", delete_file)
