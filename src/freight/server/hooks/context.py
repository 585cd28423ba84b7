"""The request a hook event comes from, as the hook payload shows it.

A middleware puts the request's remote address and the headers worth passing on in a
context variable for the handler's duration; the engine knows nothing of it, and the
dispatcher reads it when it builds a payload (an event from background work, such as an
expiry, has none). Credentials (``Authorization``, cookies) are never passed on.
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

__all__ = ["PASSED_HEADERS", "current_request", "hook_context_middleware"]

# What a receiver may want to know; any other header stays with freight.
PASSED_HEADERS = (
    "User-Agent",
    "Origin",
    "Referer",
    "X-Forwarded-For",
    "X-Forwarded-Proto",
    "X-Forwarded-Host",
    "X-Real-IP",
    "X-Request-Id",
    "Upload-Metadata",
    "Upload-Length",
    "Upload-Concat",
    "Tus-Resumable",
    "Upload-Draft-Interop-Version",
)
# A header value is cut to this many characters (a client chooses them).
_VALUE_LIMIT = 2048

_REQUEST: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "freight_hook_request", default=None
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def current_request() -> dict[str, Any] | None:
    """The hook payload's ``request`` for the request being handled, if any."""
    return _REQUEST.get()


@web.middleware
async def hook_context_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    headers = {
        name: request.headers[name][:_VALUE_LIMIT]
        for name in PASSED_HEADERS
        if name in request.headers
    }
    token = _REQUEST.set(
        {
            "remote": request.remote,
            "method": request.method,
            "path": request.path,
            "headers": headers,
        }
    )
    try:
        return await handler(request)
    finally:
        _REQUEST.reset(token)
