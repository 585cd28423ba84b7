"""What a request under the base path means, decided once, before anyone acts on it.

tus lets a client tunnel a method through ``X-HTTP-Method-Override``, and IETF requests are
told apart by ``Upload-Draft-Interop-Version``. If the auth check read ``request.method`` while
the handler dispatched on the override, a signed download link could delete its file. So the
meaning is resolved here, stored on the request, and the auth, link and origin checks and the
tus/IETF handlers all read that one :class:`Dispatch`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from freight.protocol import ietf
from freight.server.errors import PROTOCOL_KEY
from freight.server.tus import effective_method

__all__ = [
    "DISPATCH",
    "DOWNLOAD_ROUTE",
    "FILES_ROUTES",
    "Dispatch",
    "dispatch_middleware",
    "resolve",
]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

DOWNLOAD_ROUTE = "files:item"
"""The route of ``<base>/{upload_id}``: downloads, and tus/IETF requests on one upload."""
FILES_ROUTES = frozenset({"files:collection", "files:collection-bare", DOWNLOAD_ROUTE})


@dataclass(frozen=True, slots=True)
class Dispatch:
    """``method``: after the override; ``download``: a GET or plain HEAD of a file's bytes."""

    method: str
    interop_version: int | None = None
    download: bool = False


DISPATCH: web.RequestKey[Dispatch] = web.RequestKey("freight.dispatch", Dispatch)


def _route_name(request: web.Request) -> str | None:
    return request.match_info.route.name


def resolve(request: web.Request) -> Dispatch:
    """The request's :class:`Dispatch`, worked out on first use and kept on the request."""
    if DISPATCH in request:
        return request[DISPATCH]
    name = _route_name(request)
    if name not in FILES_ROUTES:
        # Every other route was chosen by the router from the real method; no override there.
        dispatch = Dispatch(method=request.method)
    else:
        dispatch = _resolve_files(request, name == DOWNLOAD_ROUTE)
    request[DISPATCH] = dispatch
    return dispatch


def _resolve_files(request: web.Request, on_item: bool) -> Dispatch:
    version = ietf.parse_interop_version(request.headers.get(ietf.INTEROP_HEADER))
    # Until it proves to be a download, a refusal (this override's included) is answered
    # in the form of the protocol the request speaks.
    request[PROTOCOL_KEY] = "tus" if version is None else ("ietf", version)
    method = effective_method(request)
    download = on_item and (
        method == "GET"
        or (method == "HEAD" and version is None and "Tus-Resumable" not in request.headers)
    )
    if download:
        del request[PROTOCOL_KEY]
    return Dispatch(method=method, interop_version=version, download=download)


@web.middleware
async def dispatch_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    resolve(request)
    return await handler(request)
