"""``GET /api/openapi.json``: an OpenAPI 3.1 description of freight's whole HTTP surface.

The document is built from the application it describes: tus and downloads sit under the
configured base path, and optional endpoints appear only when their route is registered.
``tests/integration/test_openapi.py`` keeps it honest: every route of the router is
documented, every documented path exists, and the chunk API's JSON answers validate
against the schemas here (OpenAPI 3.1 schemas are JSON Schema 2020-12).

Adding an endpoint: document it with its area's paths, in
:mod:`~freight.server.openapi_upload_paths` or :mod:`~freight.server.openapi_service_paths`
(there in :data:`~freight.server.openapi_service_paths.OPTIONAL_PATHS` if it is not always
registered), with its schemas in :mod:`~freight.server.openapi_schemas`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from freight import __version__
from freight.server.openapi_schemas import Json, error_body, schemas
from freight.server.openapi_service_paths import OPTIONAL_PATHS, service_paths
from freight.server.openapi_upload_paths import chunk_paths, tus_paths
from freight.server.state import SETTINGS

if TYPE_CHECKING:
    from freight.server.chunk_layout import ChunkPolicy

__all__ = ["add_openapi_route", "build_openapi", "registered_paths"]


OPERATIONS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})
UNAUTHORIZED = error_body("The server has a token and the request does not carry it.")
FOREIGN_ORIGIN = error_body(
    "A web page of another origin, on a server without a token (only its own page and the "
    "--cors-origin origins may use it)."
)


def _paths(base: str, registered: set[str]) -> Json:
    paths = {**tus_paths(base), **service_paths(), **chunk_paths()}
    for path, describe in OPTIONAL_PATHS.items():
        if path in registered:
            paths[path] = describe()
    return paths


def _with_refusals(paths: Json) -> Json:
    """Every operation behind the token (all but /health and the page) answers 401 without
    it, and 403 to a page of another origin the server does not let in."""
    for item in paths.values():
        for method in OPERATIONS & item.keys():
            operation = item[method]
            responses = operation["responses"]
            if operation.get("security") != []:
                responses.setdefault("401", UNAUTHORIZED)
                responses.setdefault("403", FOREIGN_ORIGIN)
    return paths


def build_openapi(*, base_path: str, registered: set[str], policy: ChunkPolicy) -> Json:
    """The OpenAPI document for a server with ``base_path`` and these registered paths."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "freight",
            "version": __version__,
            "description": (
                "Move files larger than RAM: tus 1.0 and IETF resumable uploads at the base "
                "path, a chunk API for browsers, downloads with sendfile, live events. Every "
                "endpoint but /health and the page needs `Authorization: Bearer <token>` when "
                "the server has a token (401 without). Without a token, pages of other origins "
                "than the server's own and those given with --cors-origin get 403. Errors are "
                "JSON {code, message, ...}."
            ),
        },
        "components": {
            "schemas": schemas(policy),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "signedLink": {
                    "type": "apiKey",
                    "in": "query",
                    "name": "sig",
                    "description": "With `expires`: HMAC-SHA256 under the token of <id>:<expires>.",
                },
            },
        },
        "security": [{"bearer": []}],
        "paths": _with_refusals(_paths(base_path.rstrip("/"), registered)),
    }


def registered_paths(app: web.Application) -> set[str]:
    """Canonical paths of ``app``'s routes, e.g. ``/api/uploads/{upload_id}``."""
    return {resource.canonical for resource in app.router.resources()}


def add_openapi_route(app: web.Application, policy: ChunkPolicy) -> None:
    async def openapi(request: web.Request) -> web.Response:
        # Paths are documented from where the server is mounted; ``servers`` says where.
        settings = request.app[SETTINGS]
        mount = settings.base_path.rstrip("/")
        document = build_openapi(
            base_path=settings.files_path.removeprefix(mount),
            registered={path.removeprefix(mount) for path in registered_paths(request.app)},
            policy=policy,
        )
        if mount:
            document["servers"] = [{"url": mount}]
        return web.json_response(document)

    app.router.add_get("/api/openapi.json", openapi)
