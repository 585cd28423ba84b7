"""IETF resumable uploads: request headers in, checked and typed facts out.

Parsers raise :mod:`freight.errors` types only (400 ``InvalidHeader``/``BadRequest``/
``LengthMismatch``, 405, 415, 413 ``UploadTooLarge``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from http_sfv.dictionary import Dictionary
from http_sfv.item import Item

from freight.errors import (
    BadRequest,
    InvalidHeader,
    LengthMismatch,
    MethodNotAllowed,
    UnsupportedMediaType,
    UploadTooLarge,
)
from freight.protocol.ietf_versions import (
    FEATURES,
    INCOMPLETE,
    INTEROP_HEADER,
    LENGTH,
    LIMIT,
    MAX_SF_INTEGER,
    OFFSET,
    PARTIAL_UPLOAD_TYPE,
    SUPPORTED_INTEROP_VERSIONS,
    IetfAction,
    draft_features,
)

_ACTIONS: Final[dict[str, IetfAction]] = {
    "POST": "create",
    "HEAD": "offset",
    "PATCH": "append",
    "DELETE": "cancel",
    "OPTIONS": "options",
}


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
    if version not in FEATURES:
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
    return not flag if features.complete_header == INCOMPLETE else flag


def parse_upload_offset(value: str | None, version: int) -> int | None:
    """``Upload-Offset``: an sf-integer >= 0 in every interop version (hence ``version`` is
    only checked, kept so callers need not know that)."""
    draft_features(version)
    return None if value is None else _parse_sf_integer(value, OFFSET)


def parse_upload_length(value: str | None) -> int | None:
    """``Upload-Length`` (from draft -05; tus-js-client sends it in every version)."""
    return None if value is None else _parse_sf_integer(value, LENGTH)


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
    if len(significant) > len(str(MAX_SF_INTEGER)):
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
        raise InvalidHeader(f"{LIMIT} is not a structured dictionary", header=LIMIT) from exc
    found: dict[str, int] = {}
    for key, member in dictionary.items():
        field = _LIMIT_FIELDS.get(key)
        if field is None:
            continue
        number = getattr(member, "value", None)
        if isinstance(number, bool) or not isinstance(number, int) or number < 0:
            raise InvalidHeader(f"{LIMIT} {key} must be a non-negative integer", header=LIMIT)
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
    if implied is not None and implied > MAX_SF_INTEGER:
        # Beyond what Upload-Offset/Upload-Length can ever express back to the client.
        raise UploadTooLarge(f"{implied} bytes is more than this protocol can count")
    if upload_length is not None and implied is not None and upload_length != implied:
        raise LengthMismatch(
            f"{LENGTH} {upload_length} contradicts the {implied} bytes this completing "
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
    offset = parse_upload_offset(_header(headers, OFFSET), version)
    if offset not in (None, 0):
        raise BadRequest(f"a creation request cannot carry {OFFSET} {offset}", header=OFFSET)
    content_length = _parse_content_length(_header(headers, "Content-Length"))
    upload_length = parse_upload_length(_header(headers, LENGTH))
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
    offset = parse_upload_offset(_header(headers, OFFSET), version)
    if offset is None:
        raise BadRequest(f"an append (PATCH) needs the {OFFSET} header", header=OFFSET)
    check_append_content_type(_header(headers, "Content-Type"), version)
    complete = parse_upload_complete(headers, version)
    if complete is None and version < 6:
        complete = True
    content_length = _parse_content_length(_header(headers, "Content-Length"))
    upload_length = parse_upload_length(_header(headers, LENGTH))
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
        for name in (OFFSET, features.complete_header):
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
