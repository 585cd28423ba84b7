"""The one place where freight errors become HTTP responses."""

from __future__ import annotations

import json
import logging
from typing import TypeAlias

from aiohttp import web

from freight.errors import (
    FreightError,
    OffsetMismatch,
    RangeNotSatisfiable,
    UnsupportedVersion,
    UploadLocked,
)
from freight.protocol import ietf, tus
from freight.protocol.ranges import unsatisfied_content_range

__all__ = ["PROTOCOL_KEY", "error_response", "internal_error_response"]

log = logging.getLogger(__name__)

Protocol: TypeAlias = str | tuple[str, int]
PROTOCOL_KEY: web.RequestKey[Protocol] = web.RequestKey("freight.protocol")
"""The protocol that a request speaks: "tus" or ("ietf", version); absent for the rest."""


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
    if isinstance(error, UploadLocked):
        headers["Retry-After"] = "1"
    if isinstance(protocol, tuple) and protocol[0] == "ietf":
        version = protocol[1]
        headers[ietf.INTEROP_HEADER] = str(version)
        problem = ietf.problem_for_error(error, version)
        if problem is not None:
            content_type, body = problem
    return web.Response(
        status=error.status, body=body, headers=headers, content_type=content_type.split(";")[0]
    )


def internal_error_response(request: web.Request, exc: BaseException) -> web.Response:
    log.error("unhandled error on %s %s", request.method, request.path, exc_info=exc)
    return error_response(request, FreightError("internal server error"))
