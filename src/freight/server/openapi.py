"""``GET /api/openapi.json``: an OpenAPI 3.1 description of freight's whole HTTP surface.

The document is built from the application it describes: tus and downloads sit under the
configured base path, and optional endpoints appear only when their route is registered.
``tests/integration/test_openapi.py`` keeps it honest: every route of the router is
documented, every documented path exists, and the chunk API's JSON answers validate
against the schemas here (OpenAPI 3.1 schemas are JSON Schema 2020-12).

Adding an endpoint: document it in :func:`_paths` (or, for one that is not always
registered, in :data:`_OPTIONAL_PATHS`), with its schemas in :func:`_schemas`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from freight import __version__
from freight.server.openapi_schemas import (
    CHUNK_N,
    COUNT,
    EXPIRED,
    NOT_FOUND,
    PAGE,
    TEXT,
    TOO_MANY,
    UPLOAD_ID,
    Json,
    error_body,
    header,
    json_body,
    param,
    ref,
    schemas,
)
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
SIG_HEX = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
_EVENT_KINDS = ("created", "progress", "finished", "deleted")


def _chunk_paths() -> Json:
    upload = [UPLOAD_ID]
    return {
        "/api/uploads": {
            "get": {
                "summary": "Uploads in progress, of every protocol, a page at a time",
                "parameters": PAGE,
                "responses": {
                    "200": json_body("Uploads still receiving.", ref("UploadList")),
                    "400": error_body("A bad limit or cursor."),
                },
            },
            "post": {
                "summary": "Create a chunk upload",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": ref("CreateUpload")}},
                },
                "responses": {
                    "201": json_body(
                        "Created.", ref("CreatedUpload"), {"Location": header("The upload_url.")}
                    ),
                    "400": error_body("A field is missing or invalid."),
                    "413": error_body("Larger than the server accepts (--max-size)."),
                    **TOO_MANY,
                    "507": error_body("Not enough free disk space."),
                },
            },
        },
        "/api/uploads/{upload_id}": {
            "parameters": upload,
            "get": {
                "summary": "Where an upload stands",
                "responses": {
                    "200": json_body("Progress.", ref("UploadStatus")),
                    "404": NOT_FOUND,
                    "410": EXPIRED,
                },
            },
            "delete": {
                "summary": "Abort an unfinished upload and free its space",
                "responses": {
                    "204": {"description": "Aborted."},
                    "404": NOT_FOUND,
                    "409": error_body(
                        "Finished: delete the file with DELETE /api/files/{upload_id}."
                    ),
                    "410": EXPIRED,
                    "423": error_body("A chunk is being written; retry."),
                },
            },
        },
        "/api/uploads/{upload_id}/chunks/{n}": {
            "parameters": [*upload, CHUNK_N],
            "put": {
                "summary": "Send chunk n, or a piece of it (any order, several chunks at once)",
                "description": (
                    "The body is the chunk's raw bytes: chunk_size bytes, fewer for the last. "
                    "A chunk counts whole or not at all. Resending one already received is "
                    "answered 200 with duplicate=true, and it is not written again. With "
                    "Content-Range the body is a piece of the chunk, which also counts whole "
                    "or not at all; a piece starts where the chunk's received bytes end "
                    "(missing_bytes), and the chunk counts as received once all its bytes are."
                ),
                "parameters": [
                    param(
                        "Content-Digest",
                        "header",
                        "RFC 9530: sha-256=:<base64>: (or sha-512), of this body (the piece).",
                        TEXT,
                    ),
                    param(
                        "Content-Range",
                        "header",
                        (
                            "A piece: bytes first-last/<chunk length> (or /*), offsets counted "
                            "from the chunk's first byte; at least min_piece_size bytes unless "
                            "it ends the chunk."
                        ),
                        {"type": "string", "pattern": "^bytes [0-9]+-[0-9]+/([0-9]+|\\*)$"},
                    ),
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/octet-stream": {
                            "schema": {
                                "type": "string",
                                "contentMediaType": "application/octet-stream",
                            }
                        }
                    },
                },
                "responses": {
                    "200": json_body("Stored, or already there (duplicate).", ref("ChunkReceived")),
                    "400": error_body(
                        "Wrong body length, a malformed header, or a piece too short."
                    ),
                    "404": NOT_FOUND,
                    "409": error_body(
                        "The piece does not start where the chunk's received bytes end "
                        "(ERR_PIECE_OFFSET; details: chunk_offset, where it must start)."
                    ),
                    "410": EXPIRED,
                    "415": error_body("A form-encoded body; send the raw bytes."),
                    "416": error_body(
                        "No chunk n in this upload (details: chunk_count), or a piece past the "
                        "chunk's end (details: size, the chunk's length)."
                    ),
                    "422": error_body("The body does not match Content-Digest; nothing was kept."),
                    "423": error_body("Another request is writing this chunk; retry."),
                },
            },
        },
        "/api/uploads/{upload_id}/complete": {
            "parameters": upload,
            "post": {
                "summary": "Turn a complete upload into a file",
                "description": (
                    "Idempotent. The sha256 given here, else the one given at creation, is checked."
                ),
                "requestBody": {
                    "required": False,
                    "content": {"application/json": {"schema": ref("Complete")}},
                },
                "responses": {
                    "200": json_body("The file.", ref("CompletedUpload")),
                    "404": NOT_FOUND,
                    "409": error_body(
                        "Chunks are missing (listed in missing and missing_bytes).", "Incomplete"
                    ),
                    "410": EXPIRED,
                    "422": error_body("The SHA-256 differs (details: sha256); the data is kept."),
                },
            },
        },
    }


def _tus_paths(base: str) -> Json:
    tus = param("Tus-Resumable", "header", "1.0.0 for tus; absent for IETF and downloads.", TEXT)
    interop = param(
        "Upload-Draft-Interop-Version",
        "header",
        "IETF resumable uploads (3-8) instead of tus.",
        TEXT,
    )
    offset = {"Upload-Offset": header("Bytes received.", COUNT)}
    collection = {
        "parameters": [tus, interop],
        "options": {
            "summary": "tus capabilities",
            "responses": {"204": {"description": "Tus-Version, Tus-Extension, Tus-Max-Size."}},
        },
        "post": {
            "summary": "Create a tus (or IETF) upload, optionally with its first bytes",
            "parameters": [
                param("Upload-Length", "header", "Total size.", TEXT),
                param("Upload-Defer-Length", "header", "1: size given later.", TEXT),
                param("Upload-Metadata", "header", "key base64value pairs (filename ...).", TEXT),
                param("Upload-Concat", "header", "partial, or final;<urls>.", TEXT),
            ],
            "responses": {
                "201": {
                    "description": "Created.",
                    "headers": {"Location": header("The upload URL."), **offset},
                },
                "400": error_body("Malformed headers."),
                "412": error_body("Unsupported Tus-Resumable."),
                "413": error_body("Too large."),
                **TOO_MANY,
                "507": error_body("Not enough disk."),
            },
        },
    }
    item = {
        "parameters": [UPLOAD_ID, tus, interop],
        "head": {
            "summary": "Upload offset (tus/IETF), or the file's headers",
            "responses": {
                "200": {"description": "Upload-Offset, Upload-Length ...", "headers": offset},
                "404": {"description": "No such upload."},
            },
        },
        "patch": {
            "summary": "Append bytes at Upload-Offset",
            "requestBody": {
                "content": {"application/offset+octet-stream": {"schema": {"type": "string"}}}
            },
            "responses": {
                "204": {"description": "Appended; Repr-Digest once complete.", "headers": offset},
                "409": error_body("Wrong Upload-Offset."),
                "415": error_body("Wrong Content-Type."),
                "460": error_body("Upload-Checksum mismatch; the bytes were discarded."),
                "507": error_body("The disk is full; the offset is what was recorded."),
            },
        },
        "delete": {
            "summary": "Terminate the upload",
            "responses": {"204": {"description": "Deleted."}, "404": NOT_FOUND},
        },
        "get": {
            "summary": "Download a finished file (sendfile, Range, If-Range, ETag, Repr-Digest)",
            "description": (
                "A signed link (POST /api/files/{upload_id}/link) opens this, and HEAD of the "
                "same bytes, without the Authorization header; nothing else."
            ),
            "security": [{"bearer": []}, {"signedLink": []}],
            "parameters": [
                param("Range", "header", "One byte range.", TEXT),
                param("expires", "query", "A signed link's expiry (Unix seconds).", COUNT),
                param("sig", "query", "A signed link's signature.", SIG_HEX),
            ],
            "responses": {
                "200": {
                    "description": "The file.",
                    "content": {"application/octet-stream": {"schema": {"type": "string"}}},
                },
                "206": {"description": "The requested range."},
                "404": NOT_FOUND,
                "409": error_body("Not finished yet."),
                "416": error_body("Unsatisfiable range."),
            },
        },
    }
    return {f"{base}/": collection, base: collection, f"{base}/{{upload_id}}": item}


def _readiness(status: str) -> Json:
    check = {
        "type": "object",
        "required": ["ok"],
        "properties": {"ok": {"type": "boolean"}, "error": {"type": "string"}},
    }
    names = ("database", "storage", "disk_space")
    return {
        "type": "object",
        "required": ["status", "checks"],
        "properties": {
            "status": {"const": status},
            "checks": {
                "type": "object",
                "required": list(names),
                "properties": dict.fromkeys(names, check),
            },
        },
    }


def _service_paths() -> Json:
    sse = (
        "Server-Sent Events: snapshot (Snapshot), then created/progress/finished/deleted "
        "(UploadEvent), `: keepalive` comments."
    )
    return {
        "/health": {
            "get": {
                "summary": "Liveness (never needs the token)",
                "security": [],
                "responses": {
                    "200": json_body(
                        "Up.", {"type": "object", "properties": {"status": {"const": "ok"}}}
                    )
                },
            }
        },
        "/ready": {
            "get": {
                "summary": "Readiness: database, storage and disk space (never needs the token)",
                "security": [],
                "responses": {
                    "200": json_body("Ready to take uploads.", _readiness("ready")),
                    "503": json_body("A check failed; `checks` says which.", _readiness("unready")),
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "responses": {
                    "200": {
                        "description": "Text exposition format.",
                        "content": {"text/plain": {"schema": TEXT}},
                    }
                },
            }
        },
        "/api/openapi.json": {
            "get": {
                "summary": "This document",
                "responses": {"200": json_body("OpenAPI 3.1.", {"type": "object"})},
            }
        },
        "/api/files": {
            "get": {
                "summary": "Finished files, a page at a time",
                "parameters": PAGE,
                "responses": {
                    "200": json_body("Files.", ref("FileList")),
                    "400": error_body("A bad limit or cursor."),
                },
            }
        },
        "/api/files/{upload_id}": {
            "parameters": [UPLOAD_ID],
            "delete": {
                "summary": "Delete a file (or an upload)",
                "responses": {"204": {"description": "Deleted."}, "404": NOT_FOUND},
            },
        },
        "/api/files/{upload_id}/link": {
            "parameters": [UPLOAD_ID],
            "post": {
                "summary": "A signed download link",
                "description": (
                    "A URL that opens GET and HEAD of this file without the Authorization "
                    "header for an hour (HMAC of the id and expiry under the server's token), "
                    "for plain links and download managers."
                ),
                "responses": {
                    "200": json_body(
                        "The link.",
                        {
                            "type": "object",
                            "required": ["url", "expires"],
                            "properties": {
                                "url": {"type": "string"},
                                "expires": {"type": ["integer", "null"]},
                            },
                        },
                    ),
                    "404": NOT_FOUND,
                },
            },
        },
        "/api/events": {
            "get": {
                "summary": "Live progress of every transfer",
                "description": sse,
                "responses": {
                    "200": {
                        "description": sse,
                        "content": {
                            "text/event-stream": {
                                "schema": TEXT,
                                # The JSON of each message's `data:` line, by its `event:` name.
                                "x-event-data": {
                                    "snapshot": ref("Snapshot"),
                                    **{kind: ref("UploadEvent") for kind in _EVENT_KINDS},
                                },
                            }
                        },
                    }
                },
            }
        },
    }


def _websocket_path() -> Json:
    # The WebSocket upload protocol (freight.server.ws); its messages are JSON text frames
    # and binary data frames, which OpenAPI cannot describe: docs/websocket.md does.
    return {
        "get": {
            "summary": "WebSocket uploads",
            "description": (
                "Upgrade to a WebSocket (Connection: Upgrade, Upgrade: websocket); one "
                "connection uploads one file. Messages: docs/websocket.md. Browsers, which "
                "cannot set headers here, send the token in the first message: without an "
                "Authorization header the upgrade succeeds and a missing or wrong token in "
                "that message closes the connection with code 4401 (ERR_UNAUTHORIZED)."
            ),
            "security": [{"bearer": []}, {}],
            "responses": {
                "101": {"description": "Switching protocols."},
                "400": error_body("Not a WebSocket upgrade request."),
                "401": error_body("An Authorization header with a wrong token."),
            },
        }
    }


def _page_path() -> Json:
    return {
        "get": {
            "summary": "The upload page (never needs the token; its API calls carry it)",
            "security": [],
            "responses": {
                "200": {"description": "HTML.", "content": {"text/html": {"schema": TEXT}}},
            },
        }
    }


def _static_path() -> Json:
    name = param("name", "path", "A file of the page (app.js, style.css ...).", TEXT)
    return {
        "parameters": [name],
        "get": {
            "summary": "The page's scripts, styles and icons (never needs the token)",
            "security": [],
            "responses": {
                "200": {"description": "The file, with a strong ETag."},
                "304": {"description": "Not modified."},
                "404": {"description": "No such file."},
            },
        },
    }


# Documented only when registered, so the document never names a route the server lacks.
_OPTIONAL_PATHS = {"/api/ws": _websocket_path, "/": _page_path, "/static/{name}": _static_path}


def _paths(base: str, registered: set[str]) -> Json:
    paths = {**_tus_paths(base), **_service_paths(), **_chunk_paths()}
    for path, describe in _OPTIONAL_PATHS.items():
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
