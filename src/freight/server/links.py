"""Signed download links: how a plain ``<a href>`` or ``curl URL`` reaches a file on a
server that wants a bearer token.

A link is ``/files/<id>?expires=<unix seconds>&sig=<hex>`` where ``sig`` is
HMAC-SHA256(key, "<id>:<expires>"), the key being the server's ``--token`` or, on a server
with users and no token, a random key kept in the user store (the same on every node). It
opens GET and HEAD of that one file until it expires, and nothing else; changing the token
revokes every link at once. Only who may see a file can make a link to it (the
ownership check runs before :func:`create_link`).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time

from aiohttp import web

from freight.errors import UploadIncomplete
from freight.server.dispatch import DOWNLOAD_ROUTE, resolve
from freight.server.principals import GATE
from freight.server.state import ENGINE, SETTINGS

__all__ = [
    "LINK_LIFETIME",
    "LINK_ROUTE",
    "add_link_routes",
    "link_allows",
    "may_be_link",
    "signature",
]

LINK_LIFETIME = 3600
_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
_SIG = re.compile(r"[0-9a-f]{64}")
_EXPIRES = re.compile(r"[0-9]{1,12}")  # ASCII digits only, and far fewer than int() refuses


LINK_ROUTE = "api:link"


def signature(key: str | bytes, upload_id: str, expires: int) -> str:
    message = f"{upload_id}:{expires}".encode()
    secret = key.encode() if isinstance(key, str) else key
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def may_be_link(request: web.Request) -> bool:
    """Whether the request carries a link's signature at all (no key is looked up else)."""
    return "sig" in request.query


def link_allows(request: web.Request, key: str | bytes) -> bool:
    """True for a download (GET, or a HEAD that is no tus or IETF request) of the one file a
    valid, unexpired signature names.

    Decided by the route and the method :mod:`.dispatch` resolved, never by path text or the
    raw method: no header turns a link into a delete, an upload or an API read. Query values
    are checked for shape before use, so hostile ones are simply no link.
    """
    dispatch = resolve(request)
    if not dispatch.download or request.match_info.route.name != DOWNLOAD_ROUTE:
        return False
    upload_id = request.match_info.get("upload_id", "")
    sig = request.query.get("sig", "")
    expires_text = request.query.get("expires", "")
    if not (_ID.fullmatch(upload_id) and _SIG.fullmatch(sig) and _EXPIRES.fullmatch(expires_text)):
        return False
    expires = int(expires_text)
    if expires < time.time():
        return False
    return hmac.compare_digest(sig, signature(key, upload_id, expires))


async def create_link(request: web.Request) -> web.Response:
    upload_id = request.match_info["upload_id"]
    session = await request.app[ENGINE].get(upload_id)
    if not session.is_finished:
        raise UploadIncomplete("only finished files can be linked")
    settings = request.app[SETTINGS]
    url = f"{settings.files_path}{upload_id}"
    key = await request.app[GATE].link_key()
    if key is None:
        return web.json_response({"url": url, "expires": None})
    expires = int(time.time()) + LINK_LIFETIME
    sig = signature(key, upload_id, expires)
    return web.json_response({"url": f"{url}?expires={expires}&sig={sig}", "expires": expires})


def add_link_routes(app: web.Application) -> None:
    app.router.add_post("/api/files/{upload_id}/link", create_link, name=LINK_ROUTE)
