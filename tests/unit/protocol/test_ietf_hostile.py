"""Whatever a peer puts in the IETF headers, the codec answers with a typed error or a value:
never ``ValueError``, ``UnicodeError`` or anything else a server would turn into a 500."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from freight.errors import FreightError, InvalidHeader, UploadTooLarge
from freight.protocol.ietf import (
    INTEROP_HEADER,
    SUPPORTED_INTEROP_VERSIONS,
    check_append_content_type,
    parse_ietf_request,
    parse_interop_version,
    parse_upload_complete,
    parse_upload_length,
    parse_upload_limit,
    parse_upload_offset,
)

# What aiohttp hands over: any text (odd bytes arrive as lone surrogates), long digit runs
# (Python's int() refuses more than 4300 digits), and near-misses of valid values.
digits = st.integers(min_value=1, max_value=30).map(lambda n: "9" * n) | st.integers(
    min_value=4290, max_value=6000
).map(lambda n: "9" * n)
zero_padded = st.integers(min_value=4290, max_value=6000).map(lambda n: "0" * n + "7")
near_misses = st.sampled_from(
    ["?1", "?0", "8", "-1", "1.5", "1e3", "+3", " 5 ", "5;x=1", "²", "١٢", "\udcff", "5\x00"]
)
hostile = st.one_of(st.text(max_size=60), digits, zero_padded, near_misses)
names = st.sampled_from(
    [
        INTEROP_HEADER,
        "upload-draft-interop-version",
        "Upload-Complete",
        "Upload-Incomplete",
        "Upload-Offset",
        "upload-offset",
        "Upload-Length",
        "Upload-Limit",
        "Content-Length",
        "content-length",
        "Content-Type",
        "Upload-Concat",
    ]
)
versions = st.sampled_from(SUPPORTED_INTEROP_VERSIONS)


def only_typed(parse: Callable[[], object]) -> None:
    try:
        parse()
    except FreightError as exc:
        assert 400 <= exc.status < 500, exc


@settings(max_examples=400)
@given(
    method=st.sampled_from(["POST", "HEAD", "PATCH", "DELETE", "OPTIONS", "GET", "post"]),
    version=versions,
    overrides=st.dictionaries(names, hostile, min_size=1, max_size=3),
)
def test_a_request_of_hostile_headers_raises_only_typed_errors(
    method: str, version: int, overrides: dict[str, str]
) -> None:
    # A valid request of every kind, with a few of its headers made hostile, so the parsers
    # behind the first checks are reached too.
    valid = {
        INTEROP_HEADER: str(version),
        "Upload-Complete": "?1",
        "Upload-Incomplete": "?0",
        "Upload-Offset": "0",
        "Content-Type": "application/partial-upload",
    }
    only_typed(lambda: parse_ietf_request(method, {**valid, **overrides}))


@settings(max_examples=300)
@given(value=hostile, version=versions)
def test_each_header_parser_raises_only_typed_errors(value: str, version: int) -> None:
    only_typed(lambda: parse_interop_version(value))
    only_typed(lambda: parse_upload_offset(value, version))
    only_typed(lambda: parse_upload_length(value))
    only_typed(lambda: parse_upload_limit(value))
    only_typed(lambda: parse_upload_limit(f"max-size={value}"))
    only_typed(lambda: check_append_content_type(value, version))
    only_typed(lambda: parse_upload_complete({"Upload-Complete": value}, version))
    only_typed(lambda: parse_upload_complete({"Upload-Incomplete": value}, version))


@pytest.mark.parametrize("method", ["POST", "PATCH"])
def test_a_content_length_of_thousands_of_digits_is_too_large(method: str) -> None:
    headers = {
        INTEROP_HEADER: "8",
        "Upload-Complete": "?1",
        "Upload-Offset": "0",
        "Content-Type": "application/partial-upload",
        "Content-Length": "9" * 5000,
    }
    with pytest.raises(UploadTooLarge):
        parse_ietf_request(method, headers)


def test_leading_zeros_do_not_make_a_content_length_large() -> None:
    headers = {INTEROP_HEADER: "8", "Upload-Complete": "?1", "Content-Length": "0" * 5000 + "7"}
    assert parse_ietf_request("POST", headers).content_length == 7


@pytest.mark.parametrize("value", ["٣", "²", "1_000", " ", "0x10", "\udcff"])
def test_a_content_length_of_other_digits_is_an_invalid_header(value: str) -> None:
    headers = {INTEROP_HEADER: "8", "Upload-Complete": "?1", "Content-Length": value}
    with pytest.raises(InvalidHeader):
        parse_ietf_request("POST", headers)
