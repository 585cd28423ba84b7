"""IETF resumable uploads: response headers, 104 interim responses and problem bodies.

Builders take server-side values and raise ``ValueError`` for a programming error (a value
no header could carry, a problem member on the wrong problem type).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Final

from http_sfv.dictionary import Dictionary

from freight.errors import FreightError, LengthMismatch, OffsetMismatch
from freight.protocol.ietf_versions import (
    INCOMPLETE,
    INTERIM_REASON,
    INTERIM_STATUS,
    INTEROP_HEADER,
    LATEST_INTEROP_VERSION,
    LENGTH,
    LIMIT,
    MAX_SF_INTEGER,
    OFFSET,
    PROBLEM_JSON_TYPE,
    ProblemKind,
    draft_features,
)

_PROBLEM_URI: Final = "https://iana.org/assignments/http-problem-types#"
# Titles as the draft asks IANA to register them.
_PROBLEM_TITLES: Final[dict[str, str]] = {
    "mismatching-upload-offset": "Mismatching Upload Offset",
    "completed-upload": "Upload Is Completed",
    "inconsistent-upload-length": "Inconsistent Upload Length Values",
}


def _check_sf_integer(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SF_INTEGER:
        raise ValueError(f"{name} must be an integer in 0..{MAX_SF_INTEGER}, got {value!r}")
    return value


def _check_field_value(value: str, name: str) -> str:
    # A CR or LF from a URL or id would split the header block: refuse rather than escape.
    if not value or not value.isascii() or any(char in value for char in "\r\n\0"):
        raise ValueError(f"{name} value {value!r} is empty, not ASCII, or has CR, LF or NUL")
    return value


def upload_complete_header(complete: bool, version: int) -> tuple[str, str]:
    """``("Upload-Complete", "?1")``, or interop 3's inverted ``Upload-Incomplete``."""
    name = draft_features(version).complete_header
    flag = not complete if name == INCOMPLETE else complete
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
            dictionary[key] = _check_sf_integer(value, f"{LIMIT} {key}")
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
        headers.append((LIMIT, _check_field_value(upload_limit, LIMIT)))
    return headers


def progress_104_headers(offset: int, version: int) -> list[tuple[str, str]]:
    """A progress ``104`` (interop 5+): the offset so far and never a ``Location``."""
    if not draft_features(version).has_progress_interim:
        raise ValueError(f"interop version {version} has no progress interim responses")
    return [
        (INTEROP_HEADER, str(version)),
        (OFFSET, str(_check_sf_integer(offset, OFFSET))),
    ]


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
        OFFSET: str(_check_sf_integer(offset, OFFSET)),
        name: flag,
    }
    if length is not None:
        headers[LENGTH] = str(_check_sf_integer(length, LENGTH))
    if upload_limit is not None and features.has_upload_limit:
        headers[LIMIT] = _check_field_value(upload_limit, LIMIT)
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
