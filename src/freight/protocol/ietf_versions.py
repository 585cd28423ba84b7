"""IETF resumable uploads: the interop versions and what each changes on the wire.

Header names and media types shared by :mod:`~freight.protocol.ietf_parse` and
:mod:`~freight.protocol.ietf_build`, and one :class:`DraftFeatures` row per supported
``Upload-Draft-Interop-Version``; the per-version tables and their sources are in
``docs/ietf-resumable-uploads.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

INTEROP_HEADER: Final = "Upload-Draft-Interop-Version"
PARTIAL_UPLOAD_TYPE: Final = "application/partial-upload"
PROBLEM_JSON_TYPE: Final = "application/problem+json"
INTERIM_STATUS: Final = 104
INTERIM_REASON: Final = "Upload Resumption Supported"
SUPPORTED_INTEROP_VERSIONS: Final[tuple[int, ...]] = (3, 4, 5, 6, 7, 8)
LATEST_INTEROP_VERSION: Final = 8
# OPTIONS must carry it from draft -10 on; RFC 5789 asks for it on a 415 to a PATCH.
ACCEPT_PATCH: Final = ("Accept-Patch", PARTIAL_UPLOAD_TYPE)

OFFSET: Final = "Upload-Offset"
LENGTH: Final = "Upload-Length"
LIMIT: Final = "Upload-Limit"
COMPLETE: Final = "Upload-Complete"
INCOMPLETE: Final = "Upload-Incomplete"
# RFC 9651 caps sf-integers at 15 digits; a longer value cannot be serialised either.
MAX_SF_INTEGER: Final = 999_999_999_999_999

# Browsers hide custom headers unless CORS names them; these are the IETF ones both ways.
CORS_REQUEST_HEADERS: Final = (
    INTEROP_HEADER, COMPLETE, INCOMPLETE, OFFSET, LENGTH, "Content-Type",
    "Content-Disposition", "Upload-Metadata",
)  # fmt: skip
CORS_EXPOSE_HEADERS: Final = (
    INTEROP_HEADER, COMPLETE, INCOMPLETE, OFFSET, LENGTH, LIMIT, "Location",
    "Repr-Digest",
)  # fmt: skip

IetfAction = Literal["create", "offset", "append", "cancel", "options"]
ProblemKind = Literal["mismatching-upload-offset", "completed-upload", "inconsistent-upload-length"]


@dataclass(frozen=True, slots=True)
class DraftFeatures:
    """What one interop version changes on the wire; the adapter branches on these, not numbers."""

    version: int
    drafts: str
    complete_header: str  # "Upload-Incomplete" (inverted) before interop 4
    append_requires_partial_upload: bool  # interop 6 made the media type mandatory
    has_upload_limit: bool  # Upload-Limit appeared in interop 6
    limit_age_key: str  # "expires" in interop 6, renamed "max-age" in 7
    has_problem_types: bool  # mismatching-upload-offset and completed-upload, interop 6
    has_length_problem: bool  # inconsistent-upload-length, interop 7
    has_progress_interim: bool  # 104 with Upload-Offset while receiving, interop 5
    limit_required: bool  # interop 8: Upload-Limit is a MUST in 104, HEAD and 413
    append_status: int  # drafts -01..-03 demand 201 for an incomplete append; later 2xx


def _features(version: int, drafts: str) -> DraftFeatures:
    return DraftFeatures(
        version=version,
        drafts=drafts,
        complete_header=INCOMPLETE if version < 4 else COMPLETE,
        append_requires_partial_upload=version >= 6,
        has_upload_limit=version >= 6,
        limit_age_key="expires" if version <= 6 else "max-age",
        has_problem_types=version >= 6,
        has_length_problem=version >= 7,
        has_progress_interim=version >= 5,
        limit_required=version >= 8,
        append_status=201 if version < 6 else 204,
    )


FEATURES: Final[dict[int, DraftFeatures]] = {
    version: _features(version, drafts)
    for version, drafts in (
        (3, "-01"),
        (4, "-02"),
        (5, "-03"),
        (6, "-04, -05"),
        (7, "-06, -07, -08"),
        (8, "-09, -10, -11"),
    )
}


def draft_features(version: int) -> DraftFeatures:
    """The feature row of a supported interop version (``ValueError`` otherwise: a caller bug)."""
    try:
        return FEATURES[version]
    except KeyError:
        raise ValueError(f"unsupported interop version {version!r}") from None
