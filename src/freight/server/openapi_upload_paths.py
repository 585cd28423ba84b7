"""OpenAPI paths of the upload protocols: the chunk API (``/api/uploads``) and tus/IETF.

Assembled into the document by :func:`freight.server.openapi.build_openapi`.
"""

from __future__ import annotations

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
)

SIG_HEX = {"type": "string", "pattern": "^[0-9a-f]{64}$"}


def chunk_paths() -> Json:
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
                    "A request cut midway keeps what arrived (missing_bytes shows the rest), "
                    "unless it carries a Content-Digest. Resending one already received is "
                    "answered 200 with duplicate=true, and it is not written again; a whole "
                    "chunk resent after a cut is written from where its kept bytes end. With "
                    "Content-Range the body is a piece of the chunk; a piece starts where the "
                    "chunk's received bytes end (missing_bytes), and the chunk counts as "
                    "received once all its bytes are."
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


def tus_paths(base: str) -> Json:
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
                "204": {
                    "description": "Appended; once complete, Repr-Digest if Want-Repr-Digest.",
                    "headers": offset,
                },
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
