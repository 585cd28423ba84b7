"""IETF "Resumable Uploads for HTTP" (draft-ietf-httpbis-resumable-upload): headers in, facts out.

A sans-IO codec for every interop version real peers speak: 3 (draft -01), 4 (-02), 5 (-03,
tus-js-client ``ietf-draft-03``), 6 (-04/-05, tus-js-client ``ietf-draft-05``), 7 (-06..-08)
and 8 (-09..-11). A request is IETF when it carries ``Upload-Draft-Interop-Version``; tus 1.0
requests never do, so the same URLs serve both. ``docs/ietf-resumable-uploads.md`` holds the
per-version tables this module encodes and the sources they come from.

Parsers raise :mod:`freight.errors` types only (400 ``InvalidHeader``/``BadRequest``/
``LengthMismatch``, 405, 415); builders take server-side values and raise ``ValueError`` for a
programming error. Nothing here touches a socket, a file or the upload engine.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from http_sfv.dictionary import Dictionary
from http_sfv.item import Item

from freight.errors import (
    BadRequest,
    FreightError,
    InvalidHeader,
    LengthMismatch,
    MethodNotAllowed,
    OffsetMismatch,
    UnsupportedMediaType,
    UploadTooLarge,
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

INTEROP_HEADER: Final = "Upload-Draft-Interop-Version"
PARTIAL_UPLOAD_TYPE: Final = "application/partial-upload"
PROBLEM_JSON_TYPE: Final = "application/problem+json"
INTERIM_STATUS: Final = 104
INTERIM_REASON: Final = "Upload Resumption Supported"
SUPPORTED_INTEROP_VERSIONS: Final[tuple[int, ...]] = (3, 4, 5, 6, 7, 8)
LATEST_INTEROP_VERSION: Final = 8
# OPTIONS must carry it from draft -10 on; RFC 5789 asks for it on a 415 to a PATCH.
ACCEPT_PATCH: Final = ("Accept-Patch", PARTIAL_UPLOAD_TYPE)

_OFFSET: Final = "Upload-Offset"
_LENGTH: Final = "Upload-Length"
_LIMIT: Final = "Upload-Limit"
_COMPLETE: Final = "Upload-Complete"
_INCOMPLETE: Final = "Upload-Incomplete"
# RFC 9651 caps sf-integers at 15 digits; a longer value cannot be serialised either.
_MAX_SF_INTEGER: Final = 999_999_999_999_999

# Browsers hide custom headers unless CORS names them; these are the IETF ones both ways.
CORS_REQUEST_HEADERS: Final = (
    INTEROP_HEADER, _COMPLETE, _INCOMPLETE, _OFFSET, _LENGTH, "Content-Type",
    "Content-Disposition", "Upload-Metadata",
)  # fmt: skip
CORS_EXPOSE_HEADERS: Final = (
    INTEROP_HEADER, _COMPLETE, _INCOMPLETE, _OFFSET, _LENGTH, _LIMIT, "Location",
    "Repr-Digest",
)  # fmt: skip

IetfAction = Literal["create", "offset", "append", "cancel", "options"]
ProblemKind = Literal["mismatching-upload-offset", "completed-upload", "inconsistent-upload-length"]

_ACTIONS: Final[dict[str, IetfAction]] = {
    "POST": "create",
    "HEAD": "offset",
    "PATCH": "append",
    "DELETE": "cancel",
    "OPTIONS": "options",
}
_PROBLEM_URI: Final = "https://iana.org/assignments/http-problem-types#"
# Titles as the draft asks IANA to register them.
_PROBLEM_TITLES: Final[dict[str, str]] = {
    "mismatching-upload-offset": "Mismatching Upload Offset",
    "completed-upload": "Upload Is Completed",
    "inconsistent-upload-length": "Inconsistent Upload Length Values",
}


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
        complete_header=_INCOMPLETE if version < 4 else _COMPLETE,
        append_requires_partial_upload=version >= 6,
        has_upload_limit=version >= 6,
        limit_age_key="expires" if version <= 6 else "max-age",
        has_problem_types=version >= 6,
        has_length_problem=version >= 7,
        has_progress_interim=version >= 5,
        limit_required=version >= 8,
        append_status=201 if version < 6 else 204,
    )


_FEATURES: Final[dict[int, DraftFeatures]] = {
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
        return _FEATURES[version]
    except KeyError:
        raise ValueError(f"unsupported interop version {version!r}") from None


# --- parsing -------------------------------------------------------------------------------


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive lookup that also works on plain dicts, not only CIMultiDict."""
    value = headers.get(name)
    if value is not None:
        return value
    lowered = name.lower()
    return next((v for k, v in headers.items() if k.lower() == lowered), None)


def _parse_item(value: str, name: str) -> object:
    """One sf-item's bare value; parameters are extension points and are ignored."""
    item = Item()
    try:
        item.parse(value.encode("ascii"))
    except (UnicodeEncodeError, ValueError) as exc:
        raise InvalidHeader(f"{name} is not a structured field item", header=name) from exc
    return item.value


def _parse_sf_integer(value: str, name: str) -> int:
    parsed = _parse_item(value, name)
    # bool is an int subclass, and ?1 must not pass for an offset of 1.
    if isinstance(parsed, bool) or not isinstance(parsed, int) or parsed < 0:
        raise InvalidHeader(f"{name} must be a non-negative integer", header=name)
    return parsed


def _parse_sf_boolean(value: str, name: str) -> bool:
    parsed = _parse_item(value, name)
    if not isinstance(parsed, bool):
        raise InvalidHeader(f"{name} must be a structured boolean (?0 or ?1)", header=name)
    return parsed


def parse_interop_version(value: str | None) -> int | None:
    """``None`` when absent (a tus or plain request); a supported version; or a 400."""
    if value is None:
        return None
    version = _parse_sf_integer(value, INTEROP_HEADER)
    if version not in _FEATURES:
        supported = ", ".join(map(str, SUPPORTED_INTEROP_VERSIONS))
        raise BadRequest(
            f"{INTEROP_HEADER} {version} is not supported; this server speaks {supported}",
            header=INTEROP_HEADER,
            supported=list(SUPPORTED_INTEROP_VERSIONS),
        )
    return version


def parse_upload_complete(headers: Mapping[str, str], version: int) -> bool | None:
    """Whether the request ends the upload; ``None`` when the version's header is absent.

    Interop 3 spells it ``Upload-Incomplete`` with the opposite meaning; the other spelling is
    ignored so a client mixing them gets the same answer as from the drafts' own servers.
    """
    features = draft_features(version)
    value = _header(headers, features.complete_header)
    if value is None:
        return None
    flag = _parse_sf_boolean(value, features.complete_header)
    return not flag if features.complete_header == _INCOMPLETE else flag


def parse_upload_offset(value: str | None, version: int) -> int | None:
    """``Upload-Offset``: an sf-integer >= 0 in every interop version (hence ``version`` is
    only checked, kept so callers need not know that)."""
    draft_features(version)
    return None if value is None else _parse_sf_integer(value, _OFFSET)


def parse_upload_length(value: str | None) -> int | None:
    """``Upload-Length`` (from draft -05; tus-js-client sends it in every version)."""
    return None if value is None else _parse_sf_integer(value, _LENGTH)


def _parse_content_length(value: str | None) -> int | None:
    # RFC 9110: 1*DIGIT, nothing else; not a structured field. Leading zeros are allowed, so
    # the size check counts significant digits, before int() (which refuses 4300+ digits).
    if value is None:
        return None
    stripped = value.strip()
    if not stripped.isascii() or not stripped.isdigit():
        raise InvalidHeader(
            "Content-Length must be a non-negative integer", header="Content-Length"
        )
    significant = stripped.lstrip("0") or "0"
    if len(significant) > len(str(_MAX_SF_INTEGER)):
        raise UploadTooLarge(
            f"a Content-Length of {len(significant)} digits is more than any upload"
        )
    return int(significant)


def _media_type(content_type: str | None) -> str | None:
    if content_type is None:
        return None
    return content_type.split(";", 1)[0].strip().lower() or None


def check_append_content_type(content_type: str | None, version: int) -> None:
    """Appends need ``application/partial-upload`` from interop 6 on; earlier ones take any."""
    if not draft_features(version).append_requires_partial_upload:
        return
    if _media_type(content_type) != PARTIAL_UPLOAD_TYPE:
        raise UnsupportedMediaType(
            f"an append (PATCH) with {INTEROP_HEADER} {version} needs "
            f"Content-Type: {PARTIAL_UPLOAD_TYPE}",
            accept_patch=PARTIAL_UPLOAD_TYPE,
        )


@dataclass(frozen=True, slots=True)
class UploadLimit:
    """A parsed ``Upload-Limit``; ``max_age`` also receives interop 6's ``expires``."""

    max_size: int | None = None
    min_size: int | None = None
    max_append_size: int | None = None
    min_append_size: int | None = None
    max_age: int | None = None


_LIMIT_FIELDS: Final[dict[str, str]] = {
    "max-size": "max_size",
    "min-size": "min_size",
    "max-append-size": "max_append_size",
    "min-append-size": "min_append_size",
    "max-age": "max_age",
    "expires": "max_age",
}


def parse_upload_limit(value: str) -> UploadLimit:
    """Parse ``Upload-Limit``; unknown keys are ignored as the draft requires, a known key with a
    non-integer value makes the whole field invalid."""
    dictionary = Dictionary()
    try:
        dictionary.parse(value.encode("ascii"))
    except (UnicodeEncodeError, ValueError) as exc:
        raise InvalidHeader(f"{_LIMIT} is not a structured dictionary", header=_LIMIT) from exc
    found: dict[str, int] = {}
    for key, member in dictionary.items():
        field = _LIMIT_FIELDS.get(key)
        if field is None:
            continue
        number = getattr(member, "value", None)
        if isinstance(number, bool) or not isinstance(number, int) or number < 0:
            raise InvalidHeader(f"{_LIMIT} {key} must be a non-negative integer", header=_LIMIT)
        found[field] = number
    return UploadLimit(**found)


@dataclass(frozen=True, slots=True)
class IetfRequest:
    """Everything the protocol headers of one IETF request say, checked and typed.

    ``complete``: set for ``create``; for ``append`` interop 3-5 default an absent field to
    True (the drafts only flag the incomplete case), while 6+ leave it ``None`` (the field is
    required there, but tus-js-client omits it on an empty final PATCH, so ``None`` means
    "complete once the known length is reached"). ``length`` is the total the client declared,
    from ``Upload-Length`` or from ``Upload-Complete: ?1`` + ``Content-Length`` (they agree or
    the request is refused). ``media_type`` is the creation request's Content-Type.
    """

    action: IetfAction
    version: int
    complete: bool | None = None
    offset: int | None = None
    length: int | None = None
    content_length: int | None = None
    media_type: str | None = None


def _declared_length(
    upload_length: int | None, complete: bool | None, offset: int, content_length: int | None
) -> int | None:
    implied = offset + content_length if complete and content_length is not None else None
    if implied is not None and implied > _MAX_SF_INTEGER:
        # Beyond what Upload-Offset/Upload-Length can ever express back to the client.
        raise UploadTooLarge(f"{implied} bytes is more than this protocol can count")
    if upload_length is not None and implied is not None and upload_length != implied:
        raise LengthMismatch(
            f"{_LENGTH} {upload_length} contradicts the {implied} bytes this completing "
            "request implies",
            problem="inconsistent-upload-length",
        )
    return upload_length if upload_length is not None else implied


def _parse_create(headers: Mapping[str, str], version: int) -> IetfRequest:
    if _header(headers, "Upload-Concat") is not None:
        # tus-js-client sends tus concatenation even in IETF mode (parallelUploads); the
        # drafts have no such thing, and accepting the parts would fail only at the end.
        raise BadRequest(
            "Upload-Concat is a tus 1.0 extension; parallel uploads need the tus protocol",
            header="Upload-Concat",
        )
    complete = parse_upload_complete(headers, version)
    if complete is None:
        name = draft_features(version).complete_header
        raise BadRequest(f"creating an IETF upload needs the {name} header", header=name)
    offset = parse_upload_offset(_header(headers, _OFFSET), version)
    if offset not in (None, 0):
        raise BadRequest(f"a creation request cannot carry {_OFFSET} {offset}", header=_OFFSET)
    content_length = _parse_content_length(_header(headers, "Content-Length"))
    upload_length = parse_upload_length(_header(headers, _LENGTH))
    return IetfRequest(
        action="create",
        version=version,
        complete=complete,
        offset=0,
        length=_declared_length(upload_length, complete, 0, content_length),
        content_length=content_length,
        media_type=_media_type(_header(headers, "Content-Type")),
    )


def _parse_append(headers: Mapping[str, str], version: int) -> IetfRequest:
    offset = parse_upload_offset(_header(headers, _OFFSET), version)
    if offset is None:
        raise BadRequest(f"an append (PATCH) needs the {_OFFSET} header", header=_OFFSET)
    check_append_content_type(_header(headers, "Content-Type"), version)
    complete = parse_upload_complete(headers, version)
    if complete is None and version < 6:
        complete = True
    content_length = _parse_content_length(_header(headers, "Content-Length"))
    upload_length = parse_upload_length(_header(headers, _LENGTH))
    return IetfRequest(
        action="append",
        version=version,
        complete=complete,
        offset=offset,
        length=_declared_length(upload_length, complete, offset, content_length),
        content_length=content_length,
    )


def _parse_offset_retrieval(headers: Mapping[str, str], version: int) -> IetfRequest:
    # Drafts -01..-03 demand a 400 when HEAD carries upload state; later drafts dropped it.
    if version < 6:
        features = draft_features(version)
        for name in (_OFFSET, features.complete_header):
            if _header(headers, name) is not None:
                raise BadRequest(f"an offset retrieval (HEAD) must not carry {name}", header=name)
    return IetfRequest(action="offset", version=version)


def parse_ietf_request(method: str, headers: Mapping[str, str]) -> IetfRequest:
    """Check and summarise the protocol headers of one IETF request.

    ``method`` is after any ``X-HTTP-Method-Override``. POST creates, HEAD retrieves the
    offset, PATCH appends, DELETE cancels, OPTIONS discovers limits. The request must carry
    ``Upload-Draft-Interop-Version``; route on :func:`parse_interop_version` first.
    """
    version = parse_interop_version(_header(headers, INTEROP_HEADER))
    if version is None:
        raise BadRequest(f"not an IETF resumable upload: {INTEROP_HEADER} is missing")
    action = _ACTIONS.get(method.upper())
    if action is None:
        raise MethodNotAllowed(f"{method} is not part of the IETF resumable upload protocol")
    if action == "create":
        return _parse_create(headers, version)
    if action == "append":
        return _parse_append(headers, version)
    if action == "offset":
        return _parse_offset_retrieval(headers, version)
    return IetfRequest(action=action, version=version)


# --- building ------------------------------------------------------------------------------


def _check_sf_integer(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_SF_INTEGER:
        raise ValueError(f"{name} must be an integer in 0..{_MAX_SF_INTEGER}, got {value!r}")
    return value


def _check_field_value(value: str, name: str) -> str:
    # A CR or LF from a URL or id would split the header block: refuse rather than escape.
    if not value or not value.isascii() or any(char in value for char in "\r\n\0"):
        raise ValueError(f"{name} value {value!r} is empty, not ASCII, or has CR, LF or NUL")
    return value


def upload_complete_header(complete: bool, version: int) -> tuple[str, str]:
    """``("Upload-Complete", "?1")``, or interop 3's inverted ``Upload-Incomplete``."""
    name = draft_features(version).complete_header
    flag = not complete if name == _INCOMPLETE else complete
    return name, "?1" if flag else "?0"


def upload_limit_header(
    *,
    max_size: int | None,
    max_append_size: int | None,
    min_append_size: int | None,
    max_age: int | None,
    version: int = LATEST_INTEROP_VERSION,
) -> str:
    """An ``Upload-Limit`` sf-dictionary; interop 6 names the lifetime ``expires``.

    With no limit at all this is ``min-size=0``: the field cannot be empty, and draft -05 told
    servers without limits to say exactly that.
    """
    features = draft_features(version)
    dictionary = Dictionary()
    for key, value in (
        ("max-size", max_size),
        ("max-append-size", max_append_size),
        ("min-append-size", min_append_size),
        (features.limit_age_key, max_age),
    ):
        if value is not None:
            dictionary[key] = _check_sf_integer(value, f"{_LIMIT} {key}")
    if not dictionary:
        return "min-size=0"
    return str(dictionary)


def interim_104_headers(
    location: str, version: int, *, upload_limit: str | None = None
) -> list[tuple[str, str]]:
    """Headers of the ``104 Upload Resumption Supported`` sent while a creation is received.

    Only send it when the request's interop version is supported (the draft forbids a 104 on a
    missing or mismatching one); echoing that version is what the client checks. Interop 6+
    may carry ``Upload-Limit``; interop 8 must when limits exist.
    """
    features = draft_features(version)
    headers = [
        (INTEROP_HEADER, str(version)),
        ("Location", _check_field_value(location, "Location")),
    ]
    if upload_limit is not None and features.has_upload_limit:
        headers.append((_LIMIT, _check_field_value(upload_limit, _LIMIT)))
    return headers


def progress_104_headers(offset: int, version: int) -> list[tuple[str, str]]:
    """A progress ``104`` (interop 5+): the offset so far and never a ``Location``."""
    if not draft_features(version).has_progress_interim:
        raise ValueError(f"interop version {version} has no progress interim responses")
    return [(INTEROP_HEADER, str(version)), (_OFFSET, str(_check_sf_integer(offset, _OFFSET)))]


def interim_response_bytes(headers: Sequence[tuple[str, str]]) -> bytes:
    """An HTTP/1.1 ``104`` head to write on the transport before the final response.

    aiohttp has no API for 1xx responses other than 100 Continue; this keeps the framing here.
    Never send it to an HTTP/1.0 client (RFC 9110 section 15.2).
    """
    lines = [f"HTTP/1.1 {INTERIM_STATUS} {INTERIM_REASON}"]
    for name, value in headers:
        lines.append(
            f"{_check_field_value(name, 'header name')}: {_check_field_value(value, name)}"
        )
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def upload_state_headers(
    *,
    offset: int,
    complete: bool,
    version: int,
    length: int | None = None,
    upload_limit: str | None = None,
) -> dict[str, str]:
    """The upload's state as every IETF response about it carries it.

    ``Upload-Offset`` is required in creation and append responses up to interop 6 and is what
    tus-js-client reads after every POST and PATCH, so it is always present. The interop
    version is echoed as tusd and Apple's server do.
    """
    features = draft_features(version)
    name, flag = upload_complete_header(complete, version)
    headers = {
        INTEROP_HEADER: str(version),
        _OFFSET: str(_check_sf_integer(offset, _OFFSET)),
        name: flag,
    }
    if length is not None:
        headers[_LENGTH] = str(_check_sf_integer(length, _LENGTH))
    if upload_limit is not None and features.has_upload_limit:
        headers[_LIMIT] = _check_field_value(upload_limit, _LIMIT)
    return headers


def offset_response_headers(
    offset: int,
    length: int | None,
    complete: bool,
    version: int,
    *,
    upload_limit: str | None = None,
) -> dict[str, str]:
    """What a HEAD answer (204) and a 409 carry: state, ``Upload-Length`` when known, no caching.

    tus-js-client treats ``Upload-Offset == Upload-Length`` on HEAD as "already done", so pass
    the length whenever the server knows it.
    """
    headers = upload_state_headers(
        offset=offset, complete=complete, version=version, length=length, upload_limit=upload_limit
    )
    headers["Cache-Control"] = "no-store"
    return headers


def problem_body(
    kind: ProblemKind,
    *,
    expected_offset: int | None = None,
    provided_offset: int | None = None,
    detail: str,
) -> tuple[str, bytes]:
    """An RFC 9457 ``application/problem+json`` body for one of the draft's problem types."""
    if kind not in _PROBLEM_TITLES:
        raise ValueError(f"unknown problem type {kind!r}")
    body: dict[str, object] = {
        "type": _PROBLEM_URI + kind,
        "title": _PROBLEM_TITLES[kind],
        "detail": detail,
    }
    offsets = (("expected-offset", expected_offset), ("provided-offset", provided_offset))
    for member, value in offsets:
        if value is None:
            continue
        if kind != "mismatching-upload-offset":
            raise ValueError(f"{member} belongs to mismatching-upload-offset, not {kind}")
        body[member] = _check_sf_integer(value, member)
    return PROBLEM_JSON_TYPE, json.dumps(body, separators=(",", ":")).encode("utf-8")


def problem_for_error(
    error: FreightError, version: int, *, provided_offset: int | None = None
) -> tuple[str, bytes] | None:
    """The problem body for a freight error, if this interop version defines one for it.

    ``OffsetMismatch`` becomes mismatching-upload-offset (interop 6+) and ``LengthMismatch``
    inconsistent-upload-length (interop 7+); anything else, or an older version, is ``None``
    and the transport keeps its usual error body.
    """
    features = draft_features(version)
    if isinstance(error, OffsetMismatch) and features.has_problem_types:
        provided = provided_offset
        if provided is None and isinstance(error.details.get("provided_offset"), int):
            provided = error.details["provided_offset"]
        return problem_body(
            "mismatching-upload-offset",
            expected_offset=error.offset,
            provided_offset=provided,
            detail=error.message,
        )
    if isinstance(error, LengthMismatch) and features.has_length_problem:
        return problem_body("inconsistent-upload-length", detail=error.message)
    return None
