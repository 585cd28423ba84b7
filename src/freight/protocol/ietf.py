"""IETF "Resumable Uploads for HTTP" (draft-ietf-httpbis-resumable-upload): headers in, facts out.

A sans-IO codec for every interop version real peers speak: 3 (draft -01), 4 (-02), 5 (-03,
tus-js-client ``ietf-draft-03``), 6 (-04/-05, tus-js-client ``ietf-draft-05``), 7 (-06..-08)
and 8 (-09..-11). A request is IETF when it carries ``Upload-Draft-Interop-Version``; tus 1.0
requests never do, so the same URLs serve both. ``docs/ietf-resumable-uploads.md`` holds the
per-version tables this module encodes and the sources they come from.

Parsers raise :mod:`freight.errors` types only (400 ``InvalidHeader``/``BadRequest``/
``LengthMismatch``, 405, 415); builders take server-side values and raise ``ValueError`` for a
programming error. Nothing here touches a socket, a file or the upload engine.

This module is the codec's public face; the code lives by concern in
:mod:`~freight.protocol.ietf_versions` (interop versions, their features, header names),
:mod:`~freight.protocol.ietf_parse` (request headers) and :mod:`~freight.protocol.ietf_build`
(response headers, 104 interim responses, problem bodies).
"""

from __future__ import annotations

from freight.protocol.ietf_build import (
    interim_104_headers,
    interim_response_bytes,
    offset_response_headers,
    problem_body,
    problem_for_error,
    progress_104_headers,
    upload_complete_header,
    upload_limit_header,
    upload_state_headers,
)
from freight.protocol.ietf_parse import (
    IetfRequest,
    UploadLimit,
    check_append_content_type,
    parse_ietf_request,
    parse_interop_version,
    parse_upload_complete,
    parse_upload_length,
    parse_upload_limit,
    parse_upload_offset,
)
from freight.protocol.ietf_versions import (
    ACCEPT_PATCH,
    CORS_EXPOSE_HEADERS,
    CORS_REQUEST_HEADERS,
    INTERIM_REASON,
    INTERIM_STATUS,
    INTEROP_HEADER,
    LATEST_INTEROP_VERSION,
    PARTIAL_UPLOAD_TYPE,
    PROBLEM_JSON_TYPE,
    SUPPORTED_INTEROP_VERSIONS,
    DraftFeatures,
    IetfAction,
    ProblemKind,
    draft_features,
)

__all__ = [
    "ACCEPT_PATCH",
    "CORS_EXPOSE_HEADERS",
    "CORS_REQUEST_HEADERS",
    "INTERIM_REASON",
    "INTERIM_STATUS",
    "INTEROP_HEADER",
    "LATEST_INTEROP_VERSION",
    "PARTIAL_UPLOAD_TYPE",
    "PROBLEM_JSON_TYPE",
    "SUPPORTED_INTEROP_VERSIONS",
    "DraftFeatures",
    "IetfAction",
    "IetfRequest",
    "ProblemKind",
    "UploadLimit",
    "check_append_content_type",
    "draft_features",
    "interim_104_headers",
    "interim_response_bytes",
    "offset_response_headers",
    "parse_ietf_request",
    "parse_interop_version",
    "parse_upload_complete",
    "parse_upload_length",
    "parse_upload_limit",
    "parse_upload_offset",
    "problem_body",
    "problem_for_error",
    "progress_104_headers",
    "upload_complete_header",
    "upload_limit_header",
    "upload_state_headers",
]
