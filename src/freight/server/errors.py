"""The one place where freight errors become HTTP responses."""

from __future__ import annotations

import json
import logging
from typing import TypeAlias

from aiohttp import web

from freight.errors import (
    ChecksumMismatch,
    FreightError,
    OffsetMismatch,
    RangeNotSatisfiable,
    ResourcesExhausted,
    StorageUnavailable,
    TooManyUploads,
    UnsupportedMediaType,
    UnsupportedVersion,
    UploadCompleted,
    UploadLocked,
    UploadTooLarge,
    storage_os_error,
)
from freight.protocol import ietf, tus
from freight.protocol.ranges import unsatisfied_content_range

__all__ = ["PROTOCOL_KEY", "error_response", "internal_error_response"]

log = logging.getLogger(__name__)

# Seconds a client refused for holding too many unfinished uploads should wait: about the
# time an unstarted upload takes to expire is too long to ask, a sweep is about right.
RETRY_AFTER_CAP = 60

Protocol: TypeAlias = str | tuple[str, int]
PROTOCOL_KEY: web.RequestKey[Protocol] = web.RequestKey("freight.protocol")
"""The protocol a request speaks: "tus", ("ietf", version) or "chunks"; absent for the rest."""

# The chunk API (/api/uploads) is plain JSON: 460 is tus's own checksum status, so a chunk
# whose Content-Digest fails, or a completion whose expected SHA-256 differs, is a 422; an
# upload that is already finished conflicts with the request (409) rather than being malformed.
_CHUNK_STATUS: dict[type[FreightError], int] = {ChecksumMismatch: 422, UploadCompleted: 409}


def _status(protocol: Protocol | None, error: FreightError) -> int:
    if protocol == "chunks":
        for kind, status in _CHUNK_STATUS.items():
            if isinstance(error, kind):
                return status
    return error.status


def error_response(request: web.Request, error: FreightError) -> web.Response:
    """Map ``error`` to the status, headers and body the request's protocol expects."""
    protocol = request.get(PROTOCOL_KEY)
    headers: dict[str, str] = {"Cache-Control": "no-store"}
    content_type = "application/json"
    body = json.dumps(error.to_dict()).encode()
    if protocol == "tus":
        headers["Tus-Resumable"] = tus.TUS_VERSION
        if isinstance(error, UnsupportedVersion):
            headers["Tus-Version"] = ",".join(tus.SUPPORTED_VERSIONS)
    if isinstance(error, OffsetMismatch):
        headers["Upload-Offset"] = str(error.offset)
    if isinstance(error, RangeNotSatisfiable):
        headers["Content-Range"] = unsatisfied_content_range(error.size)
    if isinstance(error, UploadLocked | ResourcesExhausted | StorageUnavailable):
        headers["Retry-After"] = "1"
    elif isinstance(error, TooManyUploads):
        headers["Retry-After"] = str(RETRY_AFTER_CAP)
    accept_patch = error.details.get("accept_patch")
    if isinstance(error, UnsupportedMediaType) and isinstance(accept_patch, str):
        headers["Accept-Patch"] = accept_patch  # RFC 5789 section 2.2
    if isinstance(protocol, tuple) and protocol[0] == "ietf":
        problem = _ietf_additions(error, protocol[1], headers)
        if problem is not None:
            content_type, body = problem
    status = _status(protocol, error)
    return web.Response(
        status=status, body=body, headers=headers, content_type=content_type.split(";")[0]
    )


def _ietf_additions(
    error: FreightError, version: int, headers: dict[str, str]
) -> tuple[str, bytes] | None:
    """Echo the interop version, add ``Upload-Limit`` to a 413 from the size cap, and return
    the draft's problem body for ``error`` if this version has one."""
    features = ietf.draft_features(version)
    headers[ietf.INTEROP_HEADER] = str(version)
    max_size = error.details.get("max_size")
    if (
        isinstance(error, UploadTooLarge)
        and isinstance(max_size, int)
        and features.has_upload_limit
    ):
        headers["Upload-Limit"] = ietf.upload_limit_header(
            max_size=max_size,
            max_append_size=None,
            min_append_size=None,
            max_age=None,
            version=version,
        )
    if isinstance(error, UploadCompleted) and features.has_problem_types:
        return ietf.problem_body("completed-upload", detail=error.message)
    return ietf.problem_for_error(error, version)


def internal_error_response(request: web.Request, exc: BaseException) -> web.Response:
    if isinstance(exc, OSError):
        mapped = storage_os_error(exc)
        if isinstance(mapped, ResourcesExhausted):  # not a bug: no traceback
            log.warning("%s %s: %s", request.method, request.path, mapped.message)
            return error_response(request, mapped)
    log.error("unhandled error on %s %s", request.method, request.path, exc_info=exc)
    return error_response(request, FreightError("internal server error"))
