"""tus 1.0.0 request and response headers, sans-IO.

Parsers take header values (``str``, or ``None`` when absent) and return plain values or
raise a :mod:`freight.errors` class whose message names the header; builders return header
values. Nothing here knows about uploads, storage or aiohttp.

Covered: ``Tus-Resumable`` (412 when missing or unsupported), ``Upload-Offset`` /
``Upload-Length`` / ``Upload-Defer-Length``, the creation request as a whole,
``Upload-Concat`` (concatenation extension), ``Upload-Checksum`` (checksum extension), HTTP
dates for ``Upload-Expires`` (expiration extension) and the OPTIONS discovery headers.
"""

from __future__ import annotations

import calendar
import datetime
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from freight.errors import (
    BadRequest,
    ConcatenationError,
    InvalidHeader,
    UnsupportedVersion,
    UploadTooLarge,
)
from freight.protocol.checksum import digest_size
from freight.protocol.metadata import decode_base64, parse_upload_metadata

__all__ = [
    "MAX_CONCAT_PARTS",
    "MAX_INT64",
    "SUPPORTED_VERSIONS",
    "TUS_HEADERS",
    "TUS_VERSION",
    "ConcatRequest",
    "CreationRequest",
    "build_upload_concat",
    "check_tus_resumable",
    "format_http_date",
    "options_headers",
    "parse_creation_headers",
    "parse_defer_length",
    "parse_http_date",
    "parse_length",
    "parse_offset",
    "parse_upload_checksum",
    "parse_upload_concat",
]

TUS_VERSION = "1.0.0"
SUPPORTED_VERSIONS: tuple[str, ...] = ("1.0.0",)
# Offsets and lengths must fit the signed 64-bit integers of storage back ends and clients.
MAX_INT64 = 2**63 - 1
MAX_CONCAT_PARTS = 1000

# Every header a tus or IETF resumable-upload client may send or need to read, for CORS
# (Access-Control-Allow-Headers / Access-Control-Expose-Headers).
TUS_HEADERS: tuple[str, ...] = (
    "Authorization",
    "Content-Digest",
    "Content-Type",
    "Location",
    "Repr-Digest",
    "Tus-Checksum-Algorithm",
    "Tus-Extension",
    "Tus-Max-Size",
    "Tus-Resumable",
    "Tus-Version",
    "Upload-Checksum",
    "Upload-Complete",
    "Upload-Concat",
    "Upload-Defer-Length",
    "Upload-Draft-Interop-Version",
    "Upload-Expires",
    "Upload-Incomplete",
    "Upload-Length",
    "Upload-Limit",
    "Upload-Metadata",
    "Upload-Offset",
    "Want-Content-Digest",
    "Want-Repr-Digest",
    "X-HTTP-Method-Override",
    "X-Request-ID",
    "X-Requested-With",
)

# ASCII only: str.isdigit() and \d would also accept digits from other scripts.
_DIGITS = re.compile(r"[0-9]+")
_UPLOAD_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
_MAX_INT64_DIGITS = len(str(MAX_INT64))


# --- version ---------------------------------------------------------------------------------


def check_tus_resumable(value: str | None) -> None:
    """Raise :class:`UnsupportedVersion` unless ``Tus-Resumable`` names a supported version."""
    supported = ",".join(SUPPORTED_VERSIONS)
    if value is None:
        raise UnsupportedVersion(f"Tus-Resumable header is required; supported: {supported}")
    if value.strip() not in SUPPORTED_VERSIONS:
        raise UnsupportedVersion(
            f"Tus-Resumable {value[:32]!r} is not supported; supported: {supported}"
        )


# --- integers --------------------------------------------------------------------------------


def _parse_non_negative(header: str, value: str) -> int:
    if not _DIGITS.fullmatch(value):
        raise InvalidHeader(f"{header} must be a non-negative integer")
    # Strip zeros first so the digit count bounds the int() conversion, however long the input.
    digits = value.lstrip("0") or "0"
    if len(digits) > _MAX_INT64_DIGITS or int(digits) > MAX_INT64:
        raise InvalidHeader(f"{header} must be at most {MAX_INT64}")
    return int(digits)


def parse_offset(value: str | None) -> int:
    """``Upload-Offset``: required, digits only, at most 2**63-1."""
    if value is None:
        raise BadRequest("Upload-Offset header is required")
    return _parse_non_negative("Upload-Offset", value)


def parse_length(value: str | None) -> int | None:
    """``Upload-Length``: ``None`` when absent, otherwise digits only, at most 2**63-1."""
    if value is None:
        return None
    return _parse_non_negative("Upload-Length", value)


def parse_defer_length(value: str | None) -> bool:
    """``Upload-Defer-Length``: absent is ``False``; ``1`` is the only valid value."""
    if value is None:
        return False
    if value != "1":
        raise InvalidHeader("Upload-Defer-Length must be 1")
    return True


# --- concatenation ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ConcatRequest:
    """A parsed ``Upload-Concat``: a partial upload, or a final one made of ``part_ids`` in order.

    Constructing an inconsistent value raises ``ValueError`` (a programming error); header
    parsing reports bad input with freight errors before getting here.
    """

    kind: Literal["partial", "final"]
    part_ids: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if (self.kind == "final") != bool(self.part_ids):
            raise ValueError("a final ConcatRequest needs part ids and a partial one has none")
        if not all(_UPLOAD_ID.fullmatch(part) for part in self.part_ids):
            raise ValueError(f"invalid upload id in {self.part_ids!r}")


def _normalise_base_path(base_path: str) -> str:
    return base_path if base_path.endswith("/") else base_path + "/"


def _upload_id_from_url(url: str, base_path: str) -> str:
    def reject(reason: str) -> ConcatenationError:
        return ConcatenationError(f"Upload-Concat URL {url[:200]!r} {reason}")

    # urllib silently drops tabs and newlines inside URLs; refuse them before it can.
    if not all("!" <= char <= "~" for char in url) or "?" in url or "#" in url:
        raise reject("must be a plain URL without query, fragment or control characters")
    if url.startswith("/") and not url.startswith("//"):
        path = url
    else:
        try:
            parts = urlsplit(url)
            _ = parts.port  # raises ValueError for a malformed port
        except ValueError as exc:
            raise reject("is not a valid URL") from exc
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise reject("must be an http(s) URL or an absolute path")
        path = parts.path
    if not path.startswith(base_path):
        raise reject(f"is not under {base_path}")
    upload_id = path[len(base_path) :]
    if not _UPLOAD_ID.fullmatch(upload_id):
        raise reject("does not end in a valid upload id")
    return upload_id


def parse_upload_concat(
    value: str, base_path: str = "/files/", *, max_parts: int = MAX_CONCAT_PARTS
) -> ConcatRequest:
    """Parse ``Upload-Concat``: ``partial`` or ``final;<url> <url> ...``.

    Each URL may be absolute (``https://host/files/abc``) or a path (``/files/abc``) and must
    name an upload directly under ``base_path``; the host is not checked. Syntax errors are
    :class:`InvalidHeader`; URLs that name no upload here, or too many parts, are
    :class:`ConcatenationError`.
    """
    value = value.strip(" \t")
    if value == "partial":
        return ConcatRequest("partial")
    kind, semicolon, url_list = value.partition(";")
    if kind != "final" or not semicolon:
        raise InvalidHeader("Upload-Concat must be 'partial' or 'final;<url> <url> ...'")
    urls = [url for url in url_list.split(" ") if url]
    if not urls:
        raise InvalidHeader("Upload-Concat final must list at least one partial upload URL")
    if len(urls) > max_parts:
        raise ConcatenationError(f"Upload-Concat lists more than {max_parts} partial uploads")
    base = _normalise_base_path(base_path)
    return ConcatRequest("final", tuple(_upload_id_from_url(url, base) for url in urls))


def build_upload_concat(concat: ConcatRequest, base_path: str = "/files/") -> str:
    """The ``Upload-Concat`` response value: ``partial`` or ``final;/files/a /files/b``."""
    if concat.kind == "partial":
        return "partial"
    base = _normalise_base_path(base_path)
    return "final;" + " ".join(base + part for part in concat.part_ids)


# --- creation --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CreationRequest:
    """What a tus creation POST asks for.

    ``length`` is ``None`` for a deferred length and for a final concatenation (whose length
    is the sum of its parts).
    """

    length: int | None
    defer_length: bool
    metadata: dict[str, str | None] = field(default_factory=dict)
    concat: ConcatRequest | None = None


def _lower_keys(headers: Mapping[str, str]) -> dict[str, str]:
    # Works the same for plain dicts and case-insensitive multidicts.
    return {name.lower(): value for name, value in headers.items()}


def _check_length_rules(length: int | None, defer: bool, concat: ConcatRequest | None) -> None:
    if concat is not None and concat.kind == "final":
        if length is not None or defer:
            raise ConcatenationError(
                "a final Upload-Concat must not carry Upload-Length or Upload-Defer-Length"
            )
    elif length is None and not defer:
        raise BadRequest("Upload-Length or Upload-Defer-Length: 1 is required")
    elif length is not None and defer:
        raise InvalidHeader("send Upload-Length or Upload-Defer-Length, not both")


def parse_creation_headers(
    headers: Mapping[str, str], max_size: int | None, *, base_path: str = "/files/"
) -> CreationRequest:
    """Validate the headers of a creation POST (``Tus-Resumable`` is checked separately).

    Exactly one of ``Upload-Length`` and ``Upload-Defer-Length: 1`` is required, except for a
    final concatenation, which has neither. A length above ``max_size`` is
    :class:`UploadTooLarge`.
    """
    lookup = _lower_keys(headers)
    concat_value = lookup.get("upload-concat")
    concat = None if concat_value is None else parse_upload_concat(concat_value, base_path)
    length = parse_length(lookup.get("upload-length"))
    defer = parse_defer_length(lookup.get("upload-defer-length"))
    _check_length_rules(length, defer, concat)
    if length is not None and max_size is not None and length > max_size:
        raise UploadTooLarge(
            f"Upload-Length {length} exceeds the maximum upload size of {max_size} bytes",
            max_size=max_size,
        )
    metadata = parse_upload_metadata(lookup.get("upload-metadata", ""))
    return CreationRequest(length=length, defer_length=defer, metadata=metadata, concat=concat)


# --- checksum --------------------------------------------------------------------------------


def parse_upload_checksum(value: str) -> tuple[str, bytes]:
    """``Upload-Checksum: <algorithm> <base64>`` as (lower-case algorithm, digest bytes).

    An unknown algorithm is :class:`UnsupportedChecksumAlgorithm`; bad syntax, bad base64 or
    a digest of the wrong length for the algorithm is :class:`InvalidHeader`.
    """
    algo, space, encoded = value.strip(" \t").partition(" ")
    if not algo or not space or not encoded:
        raise InvalidHeader("Upload-Checksum must be '<algorithm> <base64 digest>'")
    algo = algo.lower()
    expected_size = digest_size(algo)
    digest = decode_base64(encoded, "Upload-Checksum")
    if len(digest) != expected_size:
        raise InvalidHeader(
            f"Upload-Checksum {algo} digest must be {expected_size} bytes, not {len(digest)}"
        )
    return algo, digest


# --- HTTP dates ------------------------------------------------------------------------------

_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTH_ALT = "|".join(_MONTHS)
# The three forms RFC 9110 section 5.6.7 says recipients must accept; named groups let one
# converter handle all of them.
_IMF_FIXDATE = re.compile(
    rf"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), (?P<day>\d{{2}}) (?P<month>{_MONTH_ALT}) "
    rf"(?P<year>\d{{4}}) (?P<hms>\d{{2}}:\d{{2}}:\d{{2}}) GMT",
    re.ASCII,
)
_RFC850_DATE = re.compile(
    rf"(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday), (?P<day>\d{{2}})-"
    rf"(?P<month>{_MONTH_ALT})-(?P<year>\d{{2}}) (?P<hms>\d{{2}}:\d{{2}}:\d{{2}}) GMT",
    re.ASCII,
)
_ASCTIME_DATE = re.compile(
    rf"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) (?P<month>{_MONTH_ALT}) (?P<day>[ \d]\d) "
    rf"(?P<hms>\d{{2}}:\d{{2}}:\d{{2}}) (?P<year>\d{{4}})",
    re.ASCII,
)


def format_http_date(ts: float) -> str:
    """An RFC 9110 IMF-fixdate (``Sun, 06 Nov 1994 08:49:37 GMT``) for a Unix timestamp."""
    t = time.gmtime(ts)
    return (
        f"{_WEEKDAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year:04d} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"
    )


def _full_year(two_digits: int) -> int:
    # RFC 9110: a two-digit year more than 50 years ahead belongs to the previous century.
    this_year = time.gmtime().tm_year
    year = this_year - this_year % 100 + two_digits
    return year - 100 if year > this_year + 50 else year


def _match_http_date(value: str) -> re.Match[str] | None:
    for pattern in (_IMF_FIXDATE, _RFC850_DATE, _ASCTIME_DATE):
        match = pattern.fullmatch(value)
        if match is not None:
            return match
    return None


def parse_http_date(value: str, header: str = "Date") -> float:
    """A Unix timestamp from any RFC 9110 HTTP-date form; :class:`InvalidHeader` otherwise."""
    match = _match_http_date(value.strip(" \t"))
    if match is None:
        raise InvalidHeader(f"{header} is not an HTTP date")
    year = int(match["year"])
    if len(match["year"]) == 2:
        year = _full_year(year)
    hour, minute, second = (int(part) for part in match["hms"].split(":"))
    try:
        moment = datetime.datetime(
            year, _MONTHS.index(match["month"]) + 1, int(match["day"]), hour, minute, second
        )
    except ValueError as exc:  # 31 Feb, hour 25, ...
        raise InvalidHeader(f"{header} is not a valid date") from exc
    return float(calendar.timegm(moment.timetuple()))


# --- discovery -------------------------------------------------------------------------------


def options_headers(
    *,
    extensions: Sequence[str],
    max_size: int | None,
    checksum_algorithms: Sequence[str],
) -> dict[str, str]:
    """The discovery headers of an OPTIONS response.

    ``Tus-Extension`` and ``Tus-Checksum-Algorithm`` are left out when empty (tus requires
    omitting an empty extension list); ``Tus-Max-Size`` only when a limit is set.
    """
    headers = {"Tus-Version": ",".join(SUPPORTED_VERSIONS)}
    if extensions:
        headers["Tus-Extension"] = ",".join(extensions)
    if max_size is not None:
        headers["Tus-Max-Size"] = str(max_size)
    if checksum_algorithms:
        headers["Tus-Checksum-Algorithm"] = ",".join(checksum_algorithms)
    return headers
