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

from typing import TYPE_CHECKING, Any

from aiohttp import web

from freight import __version__
from freight.server.paging import DEFAULT_PAGE, MAX_PAGE
from freight.server.state import SETTINGS

if TYPE_CHECKING:
    from freight.server.chunks import ChunkPolicy

__all__ = ["add_openapi_route", "build_openapi", "registered_paths"]

Json = dict[str, Any]
ID_PATTERN = "^[A-Za-z0-9_-]{1,128}$"


def _ref(name: str) -> Json:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(description: str, schema: Json, headers: Json | None = None) -> Json:
    response: Json = {
        "description": description,
        "content": {"application/json": {"schema": schema}},
    }
    if headers:
        response["headers"] = headers
    return response


def _error(description: str, schema: str = "Error") -> Json:
    return _json(description, _ref(schema))


def _header(description: str, schema: Json | None = None) -> Json:
    return {"description": description, "schema": schema or {"type": "string"}}


def _param(name: str, where: str, description: str, schema: Json, required: bool = False) -> Json:
    return {
        "name": name,
        "in": where,
        "required": required or where == "path",
        "description": description,
        "schema": schema,
    }


UPLOAD_ID = _param(
    "upload_id", "path", "An upload's (or file's) id.", {"type": "string", "pattern": ID_PATTERN}
)
CHUNK_N = _param("n", "path", "0-based chunk number.", {"type": "integer", "minimum": 0})
NOT_FOUND = _error("No upload with this id.")
EXPIRED = _error("The upload expired and is being deleted.")
TEXT = {"type": "string"}
NULLABLE_STRING = {"type": ["string", "null"]}
COUNT = {"type": "integer", "minimum": 0}
SHA256_HEX = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
NEXT_CURSOR = {
    "type": ["string", "null"],
    "description": "Pass as ?cursor= for the next page; null on the last page.",
}
PAGE = [
    _param(
        "limit",
        "query",
        f"Entries per page (default {DEFAULT_PAGE}).",
        {"type": "integer", "minimum": 1, "maximum": MAX_PAGE},
    ),
    _param("cursor", "query", "The next_cursor of the previous page.", TEXT),
]
TOO_MANY = {
    "429": _error("This client holds too many unfinished uploads (Retry-After)."),
    "503": _error("The server holds as many unfinished uploads as it takes (Retry-After)."),
}
_STATUS_FIELDS = (
    "id", "name", "size", "received_bytes", "percent", "state", "created", "expires",
    "chunk_size", "chunk_count", "missing", "wire_bytes", "sha256", "url", "upload_url",
)  # fmt: skip
CHUNK_RANGES: Json = {
    "type": "array",
    "description": "Half-open chunk ranges [first, end): [[0, 2], [5, 6]] means chunks 0, 1, 5.",
    "items": {
        "type": "array",
        "prefixItems": [COUNT, COUNT],
        "minItems": 2,
        "maxItems": 2,
    },
}


def _schemas(policy: ChunkPolicy) -> Json:
    epoch = {"type": ["number", "null"], "description": "Seconds since the Unix epoch."}
    return {
        "Error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {
                    "type": "string",
                    "description": "Stable code, e.g. ERR_UPLOAD_NOT_FOUND.",
                },
                "message": TEXT,
            },
            "additionalProperties": True,
        },
        "Incomplete": {
            "allOf": [_ref("Error")],
            "type": "object",
            "required": ["missing"],
            "properties": {"missing": CHUNK_RANGES},
        },
        "CreateUpload": {
            "type": "object",
            "required": ["name", "size"],
            "properties": {
                "name": {"type": "string", "minLength": 1, "maxLength": 4096},
                "size": {"type": "integer", "minimum": 0},
                "chunk_size": {
                    "type": "integer",
                    "minimum": 1,
                    "description": (
                        f"Wished chunk size; the server clamps it to [{policy.minimum}, "
                        f"{policy.maximum}] (default {policy.default}) and raises it so an "
                        f"upload has at most {policy.max_count} chunks. Use the one returned."
                    ),
                },
                "sha256": {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"},
            },
        },
        "CreatedUpload": {
            "type": "object",
            "required": [
                "id",
                "name",
                "size",
                "chunk_size",
                "chunk_count",
                "upload_url",
                "expires",
            ],
            "properties": {
                "id": TEXT,
                "name": NULLABLE_STRING,
                "size": COUNT,
                "chunk_size": {"type": "integer", "minimum": 1},
                "chunk_count": COUNT,
                "upload_url": TEXT,
                "expires": epoch,
            },
        },
        "UploadStatus": {
            "type": "object",
            "required": list(_STATUS_FIELDS),
            "properties": {
                "id": TEXT,
                "name": NULLABLE_STRING,
                "size": {"type": ["integer", "null"], "minimum": 0},
                "received_bytes": COUNT,
                "percent": {"type": ["number", "null"], "minimum": 0, "maximum": 100},
                "state": {"enum": ["receiving", "assembling", "finished"]},
                "created": {"type": "number"},
                "expires": epoch,
                "chunk_size": {
                    "type": ["integer", "null"],
                    "description": "null: not a chunk upload.",
                },
                "chunk_count": {"type": ["integer", "null"]},
                "missing": {"oneOf": [CHUNK_RANGES, {"type": "null"}]},
                "wire_bytes": {
                    **COUNT,
                    "description": (
                        "Chunk body bytes received since the server started, duplicates included."
                    ),
                },
                "sha256": {"oneOf": [SHA256_HEX, {"type": "null"}]},
                "url": {**NULLABLE_STRING, "description": "The file's URL once finished."},
                "upload_url": TEXT,
            },
        },
        "UploadList": {
            "type": "object",
            "required": ["uploads", "next_cursor"],
            "properties": {
                "uploads": {"type": "array", "items": _ref("UploadStatus")},
                "next_cursor": NEXT_CURSOR,
            },
        },
        "ChunkReceived": {
            "type": "object",
            "required": ["n", "duplicate", "received_bytes", "size", "wire_bytes"],
            "properties": {
                "n": COUNT,
                "duplicate": {
                    "type": "boolean",
                    "description": "Already received; not written again.",
                },
                "received_bytes": COUNT,
                "size": COUNT,
                "wire_bytes": COUNT,
            },
        },
        "Complete": {
            "type": "object",
            "properties": {"sha256": {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"}},
        },
        "CompletedUpload": {
            "type": "object",
            "required": ["file_id", "name", "size", "sha256", "url"],
            "properties": {
                "file_id": TEXT,
                "name": NULLABLE_STRING,
                "size": COUNT,
                "sha256": SHA256_HEX,
                "url": TEXT,
            },
        },
        "FileEntry": {
            "type": "object",
            "required": ["id", "name", "size", "sha256", "created", "url"],
            "properties": {
                "id": TEXT,
                "name": NULLABLE_STRING,
                "size": COUNT,
                "sha256": SHA256_HEX,
                "created": {"type": "number"},
                "url": TEXT,
            },
        },
        "FileList": {
            "type": "object",
            "required": ["files", "next_cursor"],
            "properties": {
                "files": {"type": "array", "items": _ref("FileEntry")},
                "next_cursor": NEXT_CURSOR,
            },
        },
        "UploadEvent": {
            "type": "object",
            "description": "The data of an SSE event; its SSE event name equals `event`.",
            "required": [
                "event",
                "id",
                "name",
                "size",
                "received_bytes",
                "transferred_bytes",
                "at",
            ],
            "properties": {
                "event": {"enum": ["created", "progress", "finished", "deleted"]},
                "id": TEXT,
                "name": NULLABLE_STRING,
                "size": {"type": ["integer", "null"]},
                "received_bytes": {**COUNT, "description": "Durable bytes."},
                "transferred_bytes": {**COUNT, "description": "Bytes on disk, synced or not."},
                "at": {"type": "number"},
                "sha256": {"oneOf": [SHA256_HEX, {"type": "null"}]},
            },
        },
        "Snapshot": {
            "type": "object",
            "required": ["uploads"],
            "properties": {"uploads": {"type": "array", "items": _ref("UploadEvent")}},
        },
    }


def _chunk_paths() -> Json:
    upload = [UPLOAD_ID]
    return {
        "/api/uploads": {
            "get": {
                "summary": "Uploads in progress, of every protocol, a page at a time",
                "parameters": PAGE,
                "responses": {
                    "200": _json("Uploads still receiving.", _ref("UploadList")),
                    "400": _error("A bad limit or cursor."),
                },
            },
            "post": {
                "summary": "Create a chunk upload",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("CreateUpload")}},
                },
                "responses": {
                    "201": _json(
                        "Created.", _ref("CreatedUpload"), {"Location": _header("The upload_url.")}
                    ),
                    "400": _error("A field is missing or invalid."),
                    "413": _error("Larger than the server accepts (--max-size)."),
                    **TOO_MANY,
                    "507": _error("Not enough free disk space."),
                },
            },
        },
        "/api/uploads/{upload_id}": {
            "parameters": upload,
            "get": {
                "summary": "Where an upload stands",
                "responses": {
                    "200": _json("Progress.", _ref("UploadStatus")),
                    "404": NOT_FOUND,
                    "410": EXPIRED,
                },
            },
            "delete": {
                "summary": "Abort an unfinished upload and free its space",
                "responses": {
                    "204": {"description": "Aborted."},
                    "404": NOT_FOUND,
                    "409": _error("Finished: delete the file with DELETE /api/files/{upload_id}."),
                    "410": EXPIRED,
                    "423": _error("A chunk is being written; retry."),
                },
            },
        },
        "/api/uploads/{upload_id}/chunks/{n}": {
            "parameters": [*upload, CHUNK_N],
            "put": {
                "summary": "Send chunk n (any order, several at once)",
                "description": (
                    "The body is the chunk's raw bytes: chunk_size bytes, fewer for the last. "
                    "A chunk counts whole or not at all. Resending one already received is "
                    "answered 200 with duplicate=true, and it is not written again."
                ),
                "parameters": [
                    _param(
                        "Content-Digest",
                        "header",
                        "RFC 9530: sha-256=:<base64>: (or sha-512).",
                        TEXT,
                    )
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
                    "200": _json("Stored, or already there (duplicate).", _ref("ChunkReceived")),
                    "400": _error("Wrong body length, or a malformed header."),
                    "404": NOT_FOUND,
                    "410": EXPIRED,
                    "415": _error("A form-encoded body; send the raw bytes."),
                    "416": _error("No chunk n in this upload (details: chunk_count)."),
                    "422": _error("The body does not match Content-Digest; nothing was kept."),
                    "423": _error("Another request is writing this chunk; retry."),
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
                    "content": {"application/json": {"schema": _ref("Complete")}},
                },
                "responses": {
                    "200": _json("The file.", _ref("CompletedUpload")),
                    "404": NOT_FOUND,
                    "409": _error("Chunks are missing (listed in missing).", "Incomplete"),
                    "410": EXPIRED,
                    "422": _error("The SHA-256 differs (details: sha256); the data is kept."),
                },
            },
        },
    }


def _tus_paths(base: str) -> Json:
    tus = _param("Tus-Resumable", "header", "1.0.0 for tus; absent for IETF and downloads.", TEXT)
    interop = _param(
        "Upload-Draft-Interop-Version",
        "header",
        "IETF resumable uploads (3-8) instead of tus.",
        TEXT,
    )
    offset = {"Upload-Offset": _header("Bytes received.", COUNT)}
    collection = {
        "parameters": [tus, interop],
        "options": {
            "summary": "tus capabilities",
            "responses": {"204": {"description": "Tus-Version, Tus-Extension, Tus-Max-Size."}},
        },
        "post": {
            "summary": "Create a tus (or IETF) upload, optionally with its first bytes",
            "parameters": [
                _param("Upload-Length", "header", "Total size.", TEXT),
                _param("Upload-Defer-Length", "header", "1: size given later.", TEXT),
                _param("Upload-Metadata", "header", "key base64value pairs (filename ...).", TEXT),
                _param("Upload-Concat", "header", "partial, or final;<urls>.", TEXT),
            ],
            "responses": {
                "201": {
                    "description": "Created.",
                    "headers": {"Location": _header("The upload URL."), **offset},
                },
                "400": _error("Malformed headers."),
                "412": _error("Unsupported Tus-Resumable."),
                "413": _error("Too large."),
                **TOO_MANY,
                "507": _error("Not enough disk."),
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
                "409": _error("Wrong Upload-Offset."),
                "415": _error("Wrong Content-Type."),
                "460": _error("Upload-Checksum mismatch; the bytes were discarded."),
                "507": _error("The disk is full; the offset is what was recorded."),
            },
        },
        "delete": {
            "summary": "Terminate the upload",
            "responses": {"204": {"description": "Deleted."}, "404": NOT_FOUND},
        },
        "get": {
            "summary": "Download a finished file (sendfile, Range, If-Range, ETag, Repr-Digest)",
            "parameters": [_param("Range", "header", "One byte range.", TEXT)],
            "responses": {
                "200": {
                    "description": "The file.",
                    "content": {"application/octet-stream": {"schema": {"type": "string"}}},
                },
                "206": {"description": "The requested range."},
                "404": NOT_FOUND,
                "409": _error("Not finished yet."),
                "416": _error("Unsatisfiable range."),
            },
        },
    }
    return {f"{base}/": collection, base: collection, f"{base}/{{upload_id}}": item}


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
                    "200": _json(
                        "Up.", {"type": "object", "properties": {"status": {"const": "ok"}}}
                    )
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
                "responses": {"200": _json("OpenAPI 3.1.", {"type": "object"})},
            }
        },
        "/api/files": {
            "get": {
                "summary": "Finished files, a page at a time",
                "parameters": PAGE,
                "responses": {
                    "200": _json("Files.", _ref("FileList")),
                    "400": _error("A bad limit or cursor."),
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
                    "200": _json(
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
                    "200": {"description": sse, "content": {"text/event-stream": {"schema": TEXT}}}
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
                "cannot set headers here, send the token in the first message."
            ),
            "responses": {"101": {"description": "Switching protocols."}},
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
    name = _param("name", "path", "A file of the page (app.js, style.css ...).", TEXT)
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
                "endpoint but /health needs `Authorization: Bearer <token>` when the server "
                "has a token. Errors are JSON {code, message, ...}."
            ),
        },
        "components": {
            "schemas": _schemas(policy),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": _paths(base_path.rstrip("/"), registered),
    }


def registered_paths(app: web.Application) -> set[str]:
    """Canonical paths of ``app``'s routes, e.g. ``/api/uploads/{upload_id}``."""
    return {resource.canonical for resource in app.router.resources()}


def add_openapi_route(app: web.Application, policy: ChunkPolicy) -> None:
    async def openapi(request: web.Request) -> web.Response:
        document = build_openapi(
            base_path=request.app[SETTINGS].base_path,
            registered=registered_paths(request.app),
            policy=policy,
        )
        return web.json_response(document)

    app.router.add_get("/api/openapi.json", openapi)
