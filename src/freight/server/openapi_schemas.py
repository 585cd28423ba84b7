"""The parts of the OpenAPI document that :mod:`.openapi` assembles: JSON Schemas of every
body, and small builders of parameters, headers and responses."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from freight.server.paging import DEFAULT_PAGE, MAX_PAGE

if TYPE_CHECKING:
    from freight.server.chunk_layout import ChunkPolicy

__all__ = [
    "CHUNK_N",
    "COUNT",
    "EXPIRED",
    "ID_PATTERN",
    "NOT_FOUND",
    "TEXT",
    "UPLOAD_ID",
    "Json",
    "error_body",
    "header",
    "json_body",
    "param",
    "ref",
    "schemas",
]

Json = dict[str, Any]
ID_PATTERN = "^[A-Za-z0-9_-]{1,128}$"


def ref(name: str) -> Json:
    return {"$ref": f"#/components/schemas/{name}"}


def json_body(description: str, schema: Json, headers: Json | None = None) -> Json:
    response: Json = {
        "description": description,
        "content": {"application/json": {"schema": schema}},
    }
    if headers:
        response["headers"] = headers
    return response


def error_body(description: str, schema: str = "Error") -> Json:
    return json_body(description, ref(schema))


def header(description: str, schema: Json | None = None) -> Json:
    return {"description": description, "schema": schema or {"type": "string"}}


def param(name: str, where: str, description: str, schema: Json, required: bool = False) -> Json:
    return {
        "name": name,
        "in": where,
        "required": required or where == "path",
        "description": description,
        "schema": schema,
    }


UPLOAD_ID = param(
    "upload_id", "path", "An upload's (or file's) id.", {"type": "string", "pattern": ID_PATTERN}
)
CHUNK_N = param("n", "path", "0-based chunk number.", {"type": "integer", "minimum": 0})
NOT_FOUND = error_body("No upload with this id.")
EXPIRED = error_body("The upload expired and is being deleted.")
TEXT = {"type": "string"}
NULLABLE_STRING = {"type": ["string", "null"]}
COUNT = {"type": "integer", "minimum": 0}
SHA256_HEX = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
NEXT_CURSOR = {
    "type": ["string", "null"],
    "description": "Pass as ?cursor= for the next page; null on the last page.",
}
PAGE = [
    param(
        "limit",
        "query",
        f"Entries per page (default {DEFAULT_PAGE}).",
        {"type": "integer", "minimum": 1, "maximum": MAX_PAGE},
    ),
    param("cursor", "query", "The next_cursor of the previous page.", TEXT),
]
TOO_MANY = {
    "429": error_body("This client holds too many unfinished uploads (Retry-After)."),
    "503": error_body("The server holds as many unfinished uploads as it takes (Retry-After)."),
}
STATUS_FIELDS = (
    "id", "name", "size", "received_bytes", "percent", "state", "created", "expires",
    "chunk_size", "chunk_count", "missing", "missing_bytes", "min_piece_size", "wire_bytes",
    "sha256", "url", "upload_url",
)  # fmt: skip
MIN_PIECE: Json = {
    "type": "integer",
    "minimum": 1,
    "description": (
        "The smallest piece (Content-Range) of a chunk the server takes, but for a chunk's last."
    ),
}
CHUNK_RANGES: Json = {
    "type": "array",
    "description": "Half-open chunk ranges [first, end): [[0, 2], [5, 6]] means chunks 0, 1, 5.",
    # A pair as an array of exactly two counts: plain ``items`` (an object), which every
    # OpenAPI tool reads, rather than a 2020-12 ``prefixItems`` tuple.
    "items": {"type": "array", "items": COUNT, "minItems": 2, "maxItems": 2},
}


BYTE_RANGES: Json = {
    "type": "array",
    "description": (
        "Half-open byte ranges [start, end) (file offsets) missing from chunks partly received "
        "through pieces, each inside one chunk; a chunk missing whole has none."
    ),
    "items": {"type": "array", "items": COUNT, "minItems": 2, "maxItems": 2},
}


def schemas(policy: ChunkPolicy) -> Json:
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
            "allOf": [ref("Error")],
            "type": "object",
            "required": ["missing"],
            "properties": {"missing": CHUNK_RANGES, "missing_bytes": BYTE_RANGES},
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
                "relative_path": {
                    "type": "string",
                    "minLength": 1,
                    "description": (
                        "Where the file sat in the folder sent (photos/2024/a.jpg), kept as "
                        "the relativePath metadata: relative, no empty, '.' or '..' segment, "
                        "at most 4096 bytes (255 a segment)."
                    ),
                },
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
                "min_piece_size",
                "upload_url",
                "expires",
            ],
            "properties": {
                "id": TEXT,
                "name": NULLABLE_STRING,
                "size": COUNT,
                "chunk_size": {"type": "integer", "minimum": 1},
                "chunk_count": COUNT,
                "min_piece_size": MIN_PIECE,
                "upload_url": TEXT,
                "expires": epoch,
            },
        },
        "UploadStatus": {
            "type": "object",
            "required": list(STATUS_FIELDS),
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
                "missing_bytes": {"oneOf": [BYTE_RANGES, {"type": "null"}]},
                "min_piece_size": {"oneOf": [MIN_PIECE, {"type": "null"}]},
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
                "uploads": {"type": "array", "items": ref("UploadStatus")},
                "next_cursor": NEXT_CURSOR,
            },
        },
        "ChunkReceived": {
            "type": "object",
            "required": [
                "n",
                "duplicate",
                "chunk_complete",
                "received_bytes",
                "size",
                "wire_bytes",
            ],
            "properties": {
                "n": COUNT,
                "duplicate": {
                    "type": "boolean",
                    "description": "Already received; not written again.",
                },
                "chunk_complete": {
                    "type": "boolean",
                    "description": "Every byte of chunk n is received (always, for a whole chunk).",
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
                "files": {"type": "array", "items": ref("FileEntry")},
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
                "sha256",
            ],
            "additionalProperties": False,
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
            "properties": {"uploads": {"type": "array", "items": ref("UploadEvent")}},
        },
    }
