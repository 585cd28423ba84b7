"""Signed download links: how a plain ``<a href>`` or ``curl URL`` reaches a file on a
server that wants a bearer token.

A link is ``/files/<id>?expires=<unix seconds>&sig=<hex>`` where ``sig`` is
HMAC-SHA256(token, "<id>:<expires>"). It opens GET and HEAD of that one file until it
expires, and nothing else; changing the token revokes every link at once.
"""

from __future__ import annotations

import hashlib
import hmac
import time

from aiohttp import web

from freight.errors import UploadIncomplete
from freight.server.state import ENGINE, SETTINGS

__all__ = ["LINK_LIFETIME", "add_link_routes", "link_allows", "signature"]

LINK_LIFETIME = 3600


def signature(token: str, upload_id: str, expires: int) -> str:
    message = f"{upload_id}:{expires}".encode()
    return hmac.new(token.encode(), message, hashlib.sha256).hexdigest()


def link_allows(request: web.Request, token: str) -> bool:
    """True for a GET or HEAD of a file carrying a valid, unexpired signature."""
    if request.method not in ("GET", "HEAD"):
        return False
    upload_id = request.match_info.get("upload_id")
    sig = request.query.get("sig")
    expires_text = request.query.get("expires", "")
    if upload_id is None or sig is None or not expires_text.isdigit():
        return False
    expires = int(expires_text)
    if expires < time.time():
        return False
    return hmac.compare_digest(sig, signature(token, upload_id, expires))


async def create_link(request: web.Request) -> web.Response:
    upload_id = request.match_info["upload_id"]
    session = await request.app[ENGINE].get(upload_id)
    if not session.is_finished:
        raise UploadIncomplete("only finished files can be linked")
    settings = request.app[SETTINGS]
    url = f"{settings.base_path}{upload_id}"
    if settings.token is None:
        return web.json_response({"url": url, "expires": None})
    expires = int(time.time()) + LINK_LIFETIME
    sig = signature(settings.token, upload_id, expires)
    return web.json_response({"url": f"{url}?expires={expires}&sig={sig}", "expires": expires})


def add_link_routes(app: web.Application) -> None:
    app.router.add_post("/api/files/{upload_id}/link", create_link)
