"""OpenAPI paths of the service endpoints: health, readiness, metrics, files, links, events,
and the routes documented only when registered (WebSocket uploads, the page, its files).

Assembled into the document by :func:`freight.server.openapi.build_openapi`.
"""

from __future__ import annotations

from freight.server.openapi_schemas import (
    COUNT,
    NOT_FOUND,
    PAGE,
    SHA256_HEX,
    TEXT,
    UPLOAD_ID,
    Json,
    error_body,
    json_body,
    param,
    ref,
)

_EVENT_KINDS = ("created", "progress", "finished", "deleted")


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


_NULLABLE_COUNT = {"type": ["integer", "null"], "minimum": 0}
_AMOUNTS = {
    "type": ["object", "null"],
    "properties": {"bytes": _NULLABLE_COUNT, "files": _NULLABLE_COUNT},
}
_ME = {
    "type": "object",
    "required": ["user", "admin", "read_only", "usage", "quota"],
    "properties": {
        "user": {"type": ["string", "null"]},
        "admin": {"type": "boolean"},
        "read_only": {"type": "boolean"},
        "usage": _AMOUNTS,
        "quota": _AMOUNTS,
    },
}


def service_paths() -> Json:
    sse = (
        "Server-Sent Events: snapshot (Snapshot), then created/progress/finished/deleted "
        "(UploadEvent), `: keepalive` comments."
    )
    return {
        "/api/me": {
            "get": {
                "summary": "Who the token stands for, and their usage against quota",
                "description": "`user` null: the server's own token (admin, no quota).",
                "responses": {"200": json_body("The caller.", _ME)},
            }
        },
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
                "description": (
                    "With `size` (and `sha256`), only a finished file of that size (and"
                    " SHA-256) if one is stored: `files` then holds one entry or none, and"
                    " paging does not apply. Clients ask this before sending a file to skip"
                    " one the server already has (by size first: a file is hashed before"
                    " it is sent only when the server holds one of the same size)."
                ),
                "parameters": [
                    *PAGE,
                    param("size", "query", "Only a file of this size in bytes.", COUNT),
                    param("sha256", "query", "With size: only a file of this SHA-256.", SHA256_HEX),
                ],
                "responses": {
                    "200": json_body("Files.", ref("FileList")),
                    "400": error_body("A bad limit, cursor, size or sha256."),
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
OPTIONAL_PATHS = {"/api/ws": _websocket_path, "/": _page_path, "/static/{name}": _static_path}
