"""Cross-cutting request handling: errors, bearer-token auth, origins and CORS."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from freight.core.users import Principal
from freight.errors import FreightError, UploadForbidden
from freight.protocol import ietf
from freight.protocol.tus import TUS_HEADERS
from freight.server.body import close_after_response
from freight.server.dispatch import resolve
from freight.server.errors import error_response, internal_error_response
from freight.server.links import LINK_ROUTE, link_allows, may_be_link
from freight.server.origins import origin_listed, origin_permitted
from freight.server.principals import GATE, LINK_PRINCIPAL, PRINCIPAL, check_visible
from freight.server.state import ENGINE, SETTINGS

__all__ = [
    "auth_middleware",
    "cors_middleware",
    "error_middleware",
    "header_bytes",
    "origin_middleware",
]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

OPEN_PATHS = frozenset({"/health"})
# Paths whose handler checks the token itself: a browser cannot set headers on a WebSocket,
# so /api/ws also takes the token from its first message (see server/ws.py).
SELF_CHECKED_PATHS = frozenset({"/api/ws"})
# Counts over every user's transfers: in a household they would show the others' activity.
ADMIN_PATHS = frozenset({"/metrics"})
ALLOWED_METHODS = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
_HEADER_LIST = ", ".join(
    sorted(set(TUS_HEADERS) | set(ietf.CORS_REQUEST_HEADERS) | set(ietf.CORS_EXPOSE_HEADERS))
)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await _respond(request, handler)
    if close_after_response(request):
        response.force_close()
    return response


async def _respond(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except FreightError as exc:
        return error_response(request, exc)
    except web.HTTPException:
        raise
    except (ConnectionError, TimeoutError):
        raise
    except Exception as exc:
        return internal_error_response(request, exc)


def _is_preflight(request: web.Request) -> bool:
    return request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers


def _is_public_route(request: web.Request) -> bool:
    """Routes named ``public:…`` (the browser page and its static files) need no token.

    Decided by the route the request resolved to, not by its path text, so no path can
    reach an API handler through a public prefix.
    """
    name = request.match_info.route.name
    return name is not None and name.startswith("public:")


def _checks_itself(request: web.Request) -> bool:
    # Paths as seen from where the server is mounted (``--base-path``).
    mount = request.app[SETTINGS].base_path.rstrip("/")
    path = request.path.removeprefix(mount)
    return path in OPEN_PATHS or path in SELF_CHECKED_PATHS


def header_bytes(value: str) -> bytes | None:
    """A header value as the bytes that came in (aiohttp decodes odd bytes with
    surrogateescape); None if it cannot be, which matches no secret."""
    try:
        return value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return None


def bearer(request: web.Request) -> bytes | None:
    """The token of an ``Authorization: Bearer <token>`` header, as the bytes that came."""
    given = header_bytes(request.headers.get("Authorization", ""))
    if given is None or not given.startswith(b"Bearer "):
        return None
    return given[len(b"Bearer ") :]


_WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_READ_ONLY = "this token is read-only: it may not create, change or delete uploads"


def auth_middleware() -> Middleware:
    """Resolve who the request acts for (:mod:`.principals`), then hold it to that: a
    read-only token writes nothing, and an upload id only reaches the handler if the
    principal may see that upload (404 otherwise, as for an id that does not exist)."""

    @web.middleware
    async def check_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        if _is_preflight(request) or _checks_itself(request) or _is_public_route(request):
            return await handler(request)
        gate = request.app[GATE]
        if may_be_link(request):
            key = await gate.link_key()
            if key is not None and link_allows(request, key):
                request[PRINCIPAL] = LINK_PRINCIPAL
                return await handler(request)
        principal = await gate.identify(bearer(request))
        request[PRINCIPAL] = principal
        if principal.read_only and _writes(request):
            raise UploadForbidden(_READ_ONLY)
        if not principal.admin and _admin_only(request):
            raise UploadForbidden("only an admin token may read this")
        await _check_named_upload(request, principal)
        return await handler(request)

    return check_token


def _admin_only(request: web.Request) -> bool:
    mount = request.app[SETTINGS].base_path.rstrip("/")
    return request.path.removeprefix(mount) in ADMIN_PATHS


def _writes(request: web.Request) -> bool:
    # Making a signed link changes nothing: a read-only token may share what it can read.
    return resolve(request).method in _WRITES and request.match_info.route.name != LINK_ROUTE


async def _check_named_upload(request: web.Request, principal: Principal) -> None:
    upload_id = request.match_info.get("upload_id")
    if upload_id is not None:
        await check_visible(principal, request.app[ENGINE].sessions, upload_id)


@web.middleware
async def origin_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse a browser page the origin policy does not let in (:mod:`.origins`), reading
    and writing alike. The page and ``/health`` stay open; ``/api/ws`` checks the same
    policy itself before its upgrade."""
    if _checks_itself(request) or _is_public_route(request) or origin_permitted(request):
        return await handler(request)
    raise UploadForbidden("pages from this origin may not use this server (see --cors-origin)")


@web.middleware
async def cors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """CORS headers for the origins the policy lets in; none for any other."""
    origin = request.headers.get("Origin")
    permitted = origin is not None and origin_permitted(request)
    if _is_preflight(request):
        return _preflight(request, origin, permitted)
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        response = exc
    if permitted and origin is not None:
        _allow(response, origin)
    if isinstance(response, web.HTTPException) and response.status >= 400:
        raise response
    return response


def _preflight(request: web.Request, origin: str | None, permitted: bool) -> web.StreamResponse:
    if not permitted or origin is None:
        refused = UploadForbidden("pages from this origin may not use this server")
        return error_response(request, refused)
    response = web.Response(status=204)
    _allow(response, origin)
    response.headers["Access-Control-Allow-Methods"] = ALLOWED_METHODS
    response.headers["Access-Control-Allow-Headers"] = _HEADER_LIST
    response.headers["Access-Control-Max-Age"] = "86400"
    wants_private = request.headers.get("Access-Control-Request-Private-Network", "")
    if wants_private.strip().lower() == "true" and origin_listed(request, origin):
        response.headers["Access-Control-Allow-Private-Network"] = "true"
    return response


def _allow(response: web.StreamResponse, origin: str) -> None:
    response.headers["Access-Control-Allow-Origin"] = origin
    response.headers["Vary"] = "Origin"
    response.headers["Access-Control-Expose-Headers"] = _HEADER_LIST
