"""tus 1.0.0 header codecs."""

from __future__ import annotations

import base64
import calendar
import contextlib
import email.utils
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from freight.errors import (
    BadRequest,
    ConcatenationError,
    FreightError,
    InvalidHeader,
    UnsupportedChecksumAlgorithm,
    UnsupportedVersion,
    UploadTooLarge,
)
from freight.protocol.tus import (
    MAX_INT64,
    SUPPORTED_VERSIONS,
    TUS_HEADERS,
    TUS_VERSION,
    ConcatRequest,
    CreationRequest,
    build_upload_concat,
    check_tus_resumable,
    format_http_date,
    options_headers,
    parse_creation_headers,
    parse_defer_length,
    parse_http_date,
    parse_length,
    parse_offset,
    parse_upload_checksum,
    parse_upload_concat,
)

# --- Tus-Resumable -----------------------------------------------------------------------------


def test_versions() -> None:
    assert TUS_VERSION == "1.0.0"
    assert SUPPORTED_VERSIONS == ("1.0.0",)
    check_tus_resumable("1.0.0")


@pytest.mark.parametrize("value", [None, "", "0.2.2", "1.0", "2.0.0"])
def test_unsupported_version(value: str | None) -> None:
    with pytest.raises(UnsupportedVersion, match="Tus-Resumable") as info:
        check_tus_resumable(value)
    assert info.value.status == 412


# --- integers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"), [("0", 0), ("100", 100), ("007", 7), (str(MAX_INT64), MAX_INT64)]
)
def test_parse_offset(value: str, expected: int) -> None:
    assert parse_offset(value) == expected
    assert parse_length(value) == expected


@pytest.mark.parametrize(
    "value", ["", "-1", "+1", " 1", "1 ", "1.0", "0x10", "1e3", "\u0661\u0662", "abc", "1_000"]
)
def test_bad_integers(value: str) -> None:
    with pytest.raises(InvalidHeader, match="Upload-Offset must be a non-negative integer"):
        parse_offset(value)
    with pytest.raises(InvalidHeader, match="Upload-Length must be a non-negative integer"):
        parse_length(value)


@pytest.mark.parametrize("value", [str(MAX_INT64 + 1), "9" * 30, "1" + "0" * 10_000])
def test_too_large_integers(value: str) -> None:
    with pytest.raises(InvalidHeader, match="Upload-Offset must be at most"):
        parse_offset(value)


def test_missing_offset_and_length() -> None:
    with pytest.raises(BadRequest, match="Upload-Offset header is required"):
        parse_offset(None)
    assert parse_length(None) is None


def test_defer_length() -> None:
    assert parse_defer_length(None) is False
    assert parse_defer_length("1") is True
    for bad in ("0", "true", " 1", ""):
        with pytest.raises(InvalidHeader, match="Upload-Defer-Length must be 1"):
            parse_defer_length(bad)


@given(st.integers(0, MAX_INT64))
def test_integer_round_trip(number: int) -> None:
    assert parse_offset(str(number)) == number


# --- creation ----------------------------------------------------------------------------------


def test_creation_with_length_and_metadata() -> None:
    headers = {
        "Upload-Length": "100",
        "Upload-Metadata": "filename d29ybGRfZG9taW5hdGlvbl9wbGFuLnBkZg==,is_confidential",
    }
    assert parse_creation_headers(headers, max_size=None) == CreationRequest(
        length=100,
        defer_length=False,
        metadata={"filename": "world_domination_plan.pdf", "is_confidential": None},
        concat=None,
    )


def test_creation_header_names_are_case_insensitive() -> None:
    request = parse_creation_headers({"upload-defer-length": "1"}, max_size=10)
    assert request == CreationRequest(length=None, defer_length=True)


def test_creation_needs_exactly_one_length() -> None:
    with pytest.raises(BadRequest, match="Upload-Length or Upload-Defer-Length"):
        parse_creation_headers({}, max_size=None)
    with pytest.raises(InvalidHeader, match="not both"):
        parse_creation_headers({"Upload-Length": "1", "Upload-Defer-Length": "1"}, max_size=None)


def test_creation_too_large() -> None:
    assert parse_creation_headers({"Upload-Length": "10"}, max_size=10).length == 10
    with pytest.raises(UploadTooLarge, match="Upload-Length 11 exceeds") as info:
        parse_creation_headers({"Upload-Length": "11"}, max_size=10)
    assert info.value.status == 413


def test_creation_partial_and_final() -> None:
    partial = parse_creation_headers(
        {"Upload-Concat": "partial", "Upload-Length": "5"}, max_size=None
    )
    assert partial.concat == ConcatRequest("partial")
    assert partial.length == 5
    final = parse_creation_headers({"Upload-Concat": "final;/files/a /files/b"}, max_size=None)
    assert final == CreationRequest(
        length=None, defer_length=False, concat=ConcatRequest("final", ("a", "b"))
    )


@pytest.mark.parametrize("extra", [{"Upload-Length": "11"}, {"Upload-Defer-Length": "1"}])
def test_final_must_not_carry_length(extra: dict[str, str]) -> None:
    with pytest.raises(ConcatenationError, match="final"):
        parse_creation_headers({"Upload-Concat": "final;/files/a", **extra}, max_size=None)


def test_creation_with_custom_base_path() -> None:
    request = parse_creation_headers(
        {"Upload-Concat": "final;/tus/x"}, max_size=None, base_path="/tus"
    )
    assert request.concat == ConcatRequest("final", ("x",))


def test_creation_bad_metadata() -> None:
    with pytest.raises(InvalidHeader, match="Upload-Metadata"):
        parse_creation_headers({"Upload-Length": "1", "Upload-Metadata": "a !"}, max_size=None)


# --- Upload-Concat -----------------------------------------------------------------------------


def test_concat_spec_examples() -> None:
    assert parse_upload_concat("partial") == ConcatRequest("partial", ())
    assert parse_upload_concat("final;/files/a /files/b") == ConcatRequest("final", ("a", "b"))


def test_concat_absolute_urls_and_spacing() -> None:
    value = "final; https://tus.example.org/files/a  http://host:8080/files/B-_9 /files/a"
    assert parse_upload_concat(value) == ConcatRequest("final", ("a", "B-_9", "a"))


@pytest.mark.parametrize(
    "value", ["", "partial;", "Partial", "final", "final;", "final;   ", "finally;/files/a", "x"]
)
def test_concat_syntax_errors(value: str) -> None:
    with pytest.raises(InvalidHeader, match="Upload-Concat"):
        parse_upload_concat(value)


@pytest.mark.parametrize(
    "url",
    [
        "/other/a",
        "/files/",
        "/files/a/b",
        "/files/../files/a",
        "/files/a?x=1",
        "/files/a#frag",
        "/files/a%20",
        "/files/a\tb",
        "/files/" + "a" * 129,
        "files/a",
        "a",
        "//evil/files/a",
        "ftp://host/files/a",
        "http:///files/a",
        "http://host",
        "http://[::1/files/a",
        "/files/ä",
    ],
)
def test_concat_bad_urls(url: str) -> None:
    with pytest.raises(ConcatenationError, match="Upload-Concat URL"):
        parse_upload_concat(f"final;/files/ok {url}")


def test_concat_part_limit() -> None:
    value = "final;" + " ".join(f"/files/p{i}" for i in range(11))
    assert len(parse_upload_concat(value).part_ids) == 11
    with pytest.raises(ConcatenationError, match="more than 10"):
        parse_upload_concat(value, max_parts=10)


def test_build_upload_concat() -> None:
    assert build_upload_concat(ConcatRequest("partial")) == "partial"
    assert build_upload_concat(ConcatRequest("final", ("a", "b"))) == "final;/files/a /files/b"
    assert build_upload_concat(ConcatRequest("final", ("a",)), "/up") == "final;/up/a"


def test_concat_request_invariants() -> None:
    with pytest.raises(ValueError):
        ConcatRequest("final", ())
    with pytest.raises(ValueError):
        ConcatRequest("partial", ("a",))
    with pytest.raises(ValueError):
        ConcatRequest("final", ("a/b",))


upload_ids = st.from_regex(r"[A-Za-z0-9_-]{1,128}", fullmatch=True)
concats = st.just(ConcatRequest("partial")) | st.builds(
    lambda ids: ConcatRequest("final", tuple(ids)), st.lists(upload_ids, min_size=1, max_size=20)
)
base_paths = st.sampled_from(["/files/", "/files", "/", "/api/v1/uploads/"])


@given(concats, base_paths)
def test_concat_round_trip(concat: ConcatRequest, base_path: str) -> None:
    assert parse_upload_concat(build_upload_concat(concat, base_path), base_path) == concat


@given(st.text(max_size=100))
def test_concat_parser_never_raises_anything_else(value: str) -> None:
    for text in (value, "final;" + value, "final;/files/" + value):
        with contextlib.suppress(FreightError):
            parse_upload_concat(text)


# --- Upload-Checksum ---------------------------------------------------------------------------


def test_checksum_spec_example() -> None:
    assert parse_upload_checksum("sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=") == (
        "sha1",
        hashlib.sha1(b"hello world").digest(),
    )


@pytest.mark.parametrize("algo", ["sha1", "sha256", "md5", "sha512"])
def test_checksum_algorithms(algo: str) -> None:
    digest = hashlib.new(algo, b"x").digest()
    value = f"{algo.upper()} {base64.b64encode(digest).decode()}"
    assert parse_upload_checksum(value) == (algo, digest)


def test_checksum_unknown_algorithm() -> None:
    with pytest.raises(UnsupportedChecksumAlgorithm, match="crc32") as info:
        parse_upload_checksum("crc32 AAAAAA==")
    assert info.value.status == 400


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("sha1", "<algorithm> <base64 digest>"),
        ("sha1 ", "<algorithm> <base64 digest>"),
        (" Kq5sNclPz7QV2+lfQIuc6R7oRu0=", "<algorithm> <base64 digest>"),
        ("sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0", "base64"),
        ("sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0= x", "base64"),
        ("sha1 Kq5sNclPz7QV2-lfQIuc6R7oRu0=", "base64"),
        ("sha1 AAAA", "must be 20 bytes, not 3"),
        ("sha256 Kq5sNclPz7QV2+lfQIuc6R7oRu0=", "must be 32 bytes"),
    ],
)
def test_checksum_invalid(value: str, fragment: str) -> None:
    with pytest.raises(InvalidHeader, match="Upload-Checksum") as info:
        parse_upload_checksum(value)
    assert fragment in info.value.message


@given(st.text(max_size=100))
def test_checksum_parser_never_raises_anything_else(value: str) -> None:
    for text in (value, "sha1 " + value):
        with contextlib.suppress(FreightError):
            parse_upload_checksum(text)


# --- HTTP dates --------------------------------------------------------------------------------


def test_format_http_date() -> None:
    assert format_http_date(784111777) == "Sun, 06 Nov 1994 08:49:37 GMT"
    assert format_http_date(784111777.9) == "Sun, 06 Nov 1994 08:49:37 GMT"
    assert format_http_date(0) == "Thu, 01 Jan 1970 00:00:00 GMT"


@pytest.mark.parametrize(
    "value",
    [
        "Sun, 06 Nov 1994 08:49:37 GMT",
        "Sunday, 06-Nov-94 08:49:37 GMT",
        "Sun Nov  6 08:49:37 1994",
        "  Sun, 06 Nov 1994 08:49:37 GMT ",
    ],
)
def test_parse_http_date_forms(value: str) -> None:
    assert parse_http_date(value) == 784111777.0


def test_rfc850_two_digit_years() -> None:
    assert parse_http_date("Friday, 01-Jan-21 00:00:00 GMT") == calendar.timegm(
        (2021, 1, 1, 0, 0, 0)
    )
    assert parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT") == 784111777.0


@pytest.mark.parametrize(
    "value",
    [
        "",
        "yesterday",
        "Sun, 06 Nov 1994 08:49:37 UTC",
        "Sun, 6 Nov 1994 08:49:37 GMT",
        "Sun, 31 Feb 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 25:49:37 GMT",
        "Sun, 06 nov 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 08:49:37 GMT extra",
        "Sun, \u0660\u0666 Nov 1994 08:49:37 GMT",
        "Sun, 06 Nov 0000 08:49:37 GMT",
    ],
)
def test_parse_http_date_invalid(value: str) -> None:
    with pytest.raises(InvalidHeader, match="Upload-Expires"):
        parse_http_date(value, "Upload-Expires")


@given(st.integers(0, 253402300799))
def test_http_date_round_trip(ts: int) -> None:
    formatted = format_http_date(ts)
    assert parse_http_date(formatted) == ts
    assert email.utils.parsedate_to_datetime(formatted).timestamp() == ts


@given(st.text(max_size=60))
def test_parse_http_date_never_raises_anything_else(value: str) -> None:
    with contextlib.suppress(FreightError):
        parse_http_date(value)


# --- discovery ---------------------------------------------------------------------------------


def test_options_headers_full() -> None:
    headers = options_headers(
        extensions=["creation", "termination"],
        max_size=1024,
        checksum_algorithms=["sha1", "md5"],
    )
    assert headers == {
        "Tus-Version": "1.0.0",
        "Tus-Extension": "creation,termination",
        "Tus-Max-Size": "1024",
        "Tus-Checksum-Algorithm": "sha1,md5",
    }


def test_options_headers_minimal() -> None:
    assert options_headers(extensions=(), max_size=None, checksum_algorithms=()) == {
        "Tus-Version": "1.0.0"
    }


def test_tus_headers_for_cors() -> None:
    required = {
        "Upload-Draft-Interop-Version",
        "Upload-Complete",
        "Upload-Incomplete",
        "Upload-Limit",
        "Repr-Digest",
        "Content-Digest",
        "Upload-Checksum",
        "Upload-Concat",
        "Upload-Defer-Length",
        "Upload-Expires",
        "Upload-Metadata",
        "Upload-Offset",
        "Upload-Length",
        "Tus-Resumable",
        "Tus-Version",
        "Tus-Extension",
        "Tus-Max-Size",
        "Tus-Checksum-Algorithm",
        "X-HTTP-Method-Override",
        "Location",
        "Authorization",
        "Content-Type",
    }
    assert required <= set(TUS_HEADERS)
    assert len(set(TUS_HEADERS)) == len(TUS_HEADERS)
