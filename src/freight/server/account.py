"""``GET /api/me``: who the request's token stands for, and their usage against quota.

What ``freight ls`` and the page show above a user's files::

    {"user": "alice", "admin": false, "read_only": false,
     "usage": {"bytes": 1200, "files": 3}, "quota": {"bytes": 5000, "files": null}}

The server's own token (or an open server) is ``{"user": null, "admin": true, ...}`` with
``usage`` and ``quota`` null: it owns nothing and has no quota.
"""

from __future__ import annotations

import time

from aiohttp import web

from freight.server.principals import GATE, principal_of

__all__ = ["add_account_routes"]


async def me(request: web.Request) -> web.Response:
    principal = principal_of(request)
    body: dict[str, object] = {
        "user": principal.name,
        "admin": principal.admin,
        "read_only": principal.read_only,
        "usage": None,
        "quota": None,
    }
    users = request.app[GATE].users
    if principal.name is not None and users is not None:
        usage = await users.usage(principal.name, time.time())
        user = await users.get_user(principal.name)
        body["usage"] = {"bytes": usage.bytes, "files": usage.files}
        if user is not None:
            body["quota"] = {"bytes": user.byte_quota, "files": user.file_quota}
    return web.json_response(body, headers={"Cache-Control": "no-store"})


def add_account_routes(app: web.Application) -> None:
    app.router.add_get("/api/me", me)
