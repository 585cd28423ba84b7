"""The IETF resumable-upload codec: round trips per interop version, and typed errors only."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from freight.errors import (
    BadRequest,
    FreightError,
    InvalidHeader,
    LengthMismatch,
    MethodNotAllowed,
    OffsetMismatch,
    UnsupportedMediaType,
    UploadNotFound,
    UploadTooLarge,
)
from freight.protocol.ietf import (
    INTEROP_HEADER,
    PARTIAL_UPLOAD_TYPE,
    PROBLEM_JSON_TYPE,
    SUPPORTED_INTEROP_VERSIONS,
    IetfRequest,
    UploadLimit,
    check_append_content_type,
    draft_features,
    interim_104_headers,
    interim_response_bytes,
    offset_response_headers,
    parse_ietf_request,
    parse_interop_version,
    parse_upload_complete,
    parse_upload_length,
    parse_upload_limit,
    parse_upload_offset,
    problem_body,
    problem_for_error,
    progress_104_headers,
    upload_complete_header,
    upload_limit_header,
    upload_state_headers,
)

MAX_SF = 999_999_999_999_999
versions = st.sampled_from(SUPPORTED_INTEROP_VERSIONS)
sizes = st.integers(min_value=0, max_value=MAX_SF)
optional_sizes = st.none() | sizes
BAD_INTEGERS = ["", "-1", "1.5", "?1", "abc", '"5"', "1e3", "\uff11", "1 2", "1,2", "9" * 16, "é"]
BAD_BOOLEANS = ["", "1", "0", "true", "?2", "?", "?1?0", "1.0", '"?1"', "é"]


# --- Upload-Draft-Interop-Version -----------------------------------------------------------


def test_absent_interop_version_means_not_ietf() -> None:
    assert parse_interop_version(None) is None


@pytest.mark.parametrize("version", SUPPORTED_INTEROP_VERSIONS)
def test_supported_versions_parse(version: int) -> None:
    assert parse_interop_version(str(version)) == version
    assert parse_interop_version(f" {version} ") == version


@pytest.mark.parametrize("value", ["0", "1", "2", "9", "42"])
def test_unsupported_version_is_a_bad_request_naming_the_supported_ones(value: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_interop_version(value)
    assert type(caught.value) is BadRequest
    assert "3, 4, 5, 6, 7, 8" in caught.value.message
    assert caught.value.details["supported"] == list(SUPPORTED_INTEROP_VERSIONS)


@pytest.mark.parametrize("value", [*BAD_INTEGERS, "6, 7"])
def test_malformed_version_is_an_invalid_header(value: str) -> None:
    with pytest.raises(InvalidHeader, match=INTEROP_HEADER):
        parse_interop_version(value)


@given(st.text())
def test_any_version_text_gives_a_version_none_or_a_bad_request(value: str) -> None:
    with contextlib.suppress(BadRequest):
        assert parse_interop_version(value) in SUPPORTED_INTEROP_VERSIONS


# --- the feature table ----------------------------------------------------------------------


def test_feature_table_matches_the_drafts() -> None:
    assert draft_features(3).complete_header == "Upload-Incomplete"
    assert {draft_features(v).complete_header for v in (4, 5, 6, 7, 8)} == {"Upload-Complete"}
    assert [v for v in SUPPORTED_INTEROP_VERSIONS if draft_features(v).has_progress_interim] == [
        5, 6, 7, 8,
    ]  # fmt: skip
    assert not draft_features(5).append_requires_partial_upload
    assert draft_features(6).append_requires_partial_upload
    assert draft_features(6).limit_age_key == "expires"
    assert draft_features(7).limit_age_key == "max-age"
    assert not draft_features(6).has_length_problem and draft_features(7).has_length_problem
    assert draft_features(8).limit_required and not draft_features(7).limit_required
    assert [draft_features(v).append_status for v in SUPPORTED_INTEROP_VERSIONS] == [
        201, 201, 201, 204, 204, 204,
    ]  # fmt: skip


@pytest.mark.parametrize("version", [0, 2, 9])
def test_feature_table_rejects_unknown_versions(version: int) -> None:
    with pytest.raises(ValueError, match="unsupported interop version"):
        draft_features(version)


# --- Upload-Complete / Upload-Incomplete ----------------------------------------------------


@pytest.mark.parametrize("version", SUPPORTED_INTEROP_VERSIONS)
@pytest.mark.parametrize("complete", [True, False])
def test_completeness_round_trips(version: int, complete: bool) -> None:
    name, value = upload_complete_header(complete, version)
    assert parse_upload_complete({name: value}, version) is complete
    assert parse_upload_complete({name.lower(): value}, version) is complete


def test_interop_3_speaks_upload_incomplete_inverted() -> None:
    assert upload_complete_header(True, 3) == ("Upload-Incomplete", "?0")
    assert upload_complete_header(False, 3) == ("Upload-Incomplete", "?1")
    assert upload_complete_header(True, 4) == ("Upload-Complete", "?1")
    # Each version reads only its own spelling.
    assert parse_upload_complete({"Upload-Complete": "?1"}, 3) is None
    assert parse_upload_complete({"Upload-Incomplete": "?1"}, 5) is None


@pytest.mark.parametrize("version", SUPPORTED_INTEROP_VERSIONS)
def test_absent_completeness_is_none(version: int) -> None:
    assert parse_upload_complete({}, version) is None


@pytest.mark.parametrize("value", BAD_BOOLEANS)
@pytest.mark.parametrize("version", [3, 6])
def test_malformed_completeness_is_an_invalid_header(value: str, version: int) -> None:
    name = draft_features(version).complete_header
    with pytest.raises(InvalidHeader, match=name):
        parse_upload_complete({name: value}, version)


# --- Upload-Offset / Upload-Length ----------------------------------------------------------


@given(version=versions, offset=sizes, length=optional_sizes, complete=st.booleans())
def test_state_headers_round_trip(
    version: int, offset: int, length: int | None, complete: bool
) -> None:
    headers = upload_state_headers(offset=offset, complete=complete, version=version, length=length)
    assert parse_upload_offset(headers["Upload-Offset"], version) == offset
    assert parse_upload_length(headers.get("Upload-Length")) == length
    assert parse_upload_complete(headers, version) is complete
    assert parse_interop_version(headers[INTEROP_HEADER]) == version


def test_absent_offset_and_length_are_none() -> None:
    assert parse_upload_offset(None, 6) is None
    assert parse_upload_length(None) is None


def test_integer_parameters_are_ignored() -> None:
    assert parse_upload_offset("12;foo=bar", 8) == 12


@pytest.mark.parametrize("value", BAD_INTEGERS)
def test_malformed_offset_and_length_are_invalid_headers(value: str) -> None:
    with pytest.raises(InvalidHeader, match="Upload-Offset"):
        parse_upload_offset(value, 8)
    with pytest.raises(InvalidHeader, match="Upload-Length"):
        parse_upload_length(value)


@given(st.text())
def test_any_offset_text_gives_an_integer_or_an_invalid_header(value: str) -> None:
    try:
        result = parse_upload_offset(value, 5)
    except InvalidHeader:
        return
    assert isinstance(result, int) and not isinstance(result, bool) and result >= 0


# --- Content-Type of appends ----------------------------------------------------------------


@pytest.mark.parametrize("version", [3, 4, 5])
@pytest.mark.parametrize("content_type", [None, "application/offset+octet-stream", "text/plain"])
def test_early_versions_accept_any_append_type(version: int, content_type: str | None) -> None:
    check_append_content_type(content_type, version)


@pytest.mark.parametrize("version", [6, 7, 8])
@pytest.mark.parametrize(
    "content_type",
    [PARTIAL_UPLOAD_TYPE, "Application/Partial-Upload", f"{PARTIAL_UPLOAD_TYPE}; x=1"],
)
def test_later_versions_accept_partial_upload(version: int, content_type: str) -> None:
    check_append_content_type(content_type, version)


@pytest.mark.parametrize("version", [6, 7, 8])
@pytest.mark.parametrize("content_type", [None, "", "application/offset+octet-stream"])
def test_later_versions_need_partial_upload(version: int, content_type: str | None) -> None:
    with pytest.raises(UnsupportedMediaType) as caught:
        check_append_content_type(content_type, version)
    assert caught.value.status == 415
    assert caught.value.details["accept_patch"] == PARTIAL_UPLOAD_TYPE


# --- Upload-Limit ---------------------------------------------------------------------------


@given(
    version=versions,
    max_size=optional_sizes,
    max_append=optional_sizes,
    min_append=optional_sizes,
    max_age=optional_sizes,
)
def test_upload_limit_round_trips(
    version: int,
    max_size: int | None,
    max_append: int | None,
    min_append: int | None,
    max_age: int | None,
) -> None:
    value = upload_limit_header(
        max_size=max_size,
        max_append_size=max_append,
        min_append_size=min_append,
        max_age=max_age,
        version=version,
    )
    nothing = all(v is None for v in (max_size, max_append, min_append, max_age))
    assert parse_upload_limit(value) == UploadLimit(
        max_size=max_size,
        min_size=0 if nothing else None,
        max_append_size=max_append,
        min_append_size=min_append,
        max_age=max_age,
    )


def test_upload_limit_names_the_lifetime_per_version() -> None:
    kwargs = {"max_size": 10, "max_append_size": None, "min_append_size": None, "max_age": 60}
    assert upload_limit_header(**kwargs, version=6) == "max-size=10, expires=60"
    assert upload_limit_header(**kwargs, version=8) == "max-size=10, max-age=60"
    assert upload_limit_header(max_size=None, max_append_size=None, min_append_size=None,
                               max_age=None) == "min-size=0"  # fmt: skip


@pytest.mark.parametrize("bad", [-1, MAX_SF + 1, True])
def test_upload_limit_refuses_values_it_cannot_serialise(bad: int) -> None:
    with pytest.raises(ValueError):
        upload_limit_header(max_size=bad, max_append_size=None, min_append_size=None, max_age=None)


def test_upload_limit_parsing_ignores_unknown_keys() -> None:
    assert parse_upload_limit("foo=bar, max-size=5, baz") == UploadLimit(max_size=5)


@pytest.mark.parametrize(
    "value", ["max-size=?1", "max-size=-1", "max-size=1.5", "max-size=abc", "max-size=", "=", "é"]
)
def test_malformed_upload_limit_is_an_invalid_header(value: str) -> None:
    with pytest.raises(InvalidHeader, match="Upload-Limit"):
        parse_upload_limit(value)


# --- interim responses ----------------------------------------------------------------------


@pytest.mark.parametrize("version", SUPPORTED_INTEROP_VERSIONS)
def test_104_echoes_the_version_and_locates_the_upload(version: int) -> None:
    headers = interim_104_headers("/files/abc", version, upload_limit="max-size=10")
    assert headers[:2] == [(INTEROP_HEADER, str(version)), ("Location", "/files/abc")]
    assert (("Upload-Limit", "max-size=10") in headers) is (version >= 6)
    assert interim_104_headers("/files/abc", version) == headers[:2]


@pytest.mark.parametrize("location", ["", "/files/a\r\nSet-Cookie: x=1", "/files/\n", "/fé"])
def test_104_refuses_header_injection(location: str) -> None:
    with pytest.raises(ValueError):
        interim_104_headers(location, 8)


def test_interim_response_bytes_frame_an_http11_104() -> None:
    raw = interim_response_bytes(interim_104_headers("/files/abc", 6))
    assert raw == (
        b"HTTP/1.1 104 Upload Resumption Supported\r\n"
        b"Upload-Draft-Interop-Version: 6\r\n"
        b"Location: /files/abc\r\n\r\n"
    )


@pytest.mark.parametrize("version", [5, 6, 7, 8])
def test_progress_104_carries_only_the_offset(version: int) -> None:
    assert progress_104_headers(42, version) == [
        (INTEROP_HEADER, str(version)),
        ("Upload-Offset", "42"),
    ]


@pytest.mark.parametrize("version", [3, 4])
def test_progress_104_does_not_exist_before_interop_5(version: int) -> None:
    with pytest.raises(ValueError):
        progress_104_headers(42, version)


# --- HEAD and 409 ---------------------------------------------------------------------------


@pytest.mark.parametrize("version", SUPPORTED_INTEROP_VERSIONS)
def test_offset_response_headers(version: int) -> None:
    headers = offset_response_headers(5, 11, False, version, upload_limit="max-age=60")
    complete_name, complete_value = upload_complete_header(False, version)
    expected = {
        INTEROP_HEADER: str(version),
        "Upload-Offset": "5",
        complete_name: complete_value,
        "Upload-Length": "11",
        "Cache-Control": "no-store",
    }
    if version >= 6:
        expected["Upload-Limit"] = "max-age=60"
    assert headers == expected


def test_offset_response_omits_an_unknown_length() -> None:
    assert "Upload-Length" not in offset_response_headers(5, None, False, 8)


# --- problem details ------------------------------------------------------------------------


def test_mismatching_offset_problem() -> None:
    content_type, body = problem_body(
        "mismatching-upload-offset", expected_offset=10, provided_offset=20, detail="off by 10"
    )
    assert content_type == PROBLEM_JSON_TYPE
    assert json.loads(body) == {
        "type": "https://iana.org/assignments/http-problem-types#mismatching-upload-offset",
        "title": "Mismatching Upload Offset",
        "detail": "off by 10",
        "expected-offset": 10,
        "provided-offset": 20,
    }


@pytest.mark.parametrize(
    ("kind", "title"),
    [
        ("completed-upload", "Upload Is Completed"),
        ("inconsistent-upload-length", "Inconsistent Upload Length Values"),
    ],
)
def test_other_problems(kind: str, title: str) -> None:
    _, body = problem_body(kind, detail="no")  # type: ignore[arg-type]
    assert json.loads(body) == {
        "type": f"https://iana.org/assignments/http-problem-types#{kind}",
        "title": title,
        "detail": "no",
    }
    with pytest.raises(ValueError):
        problem_body(kind, expected_offset=1, detail="no")  # type: ignore[arg-type]


def test_unknown_problem_kind_is_refused() -> None:
    with pytest.raises(ValueError):
        problem_body("nope", detail="x")  # type: ignore[arg-type]


def test_problem_for_offset_mismatch_starts_at_interop_6() -> None:
    error = OffsetMismatch("expected 10", offset=10)
    assert problem_for_error(error, 5, provided_offset=20) is None
    found = problem_for_error(error, 6, provided_offset=20)
    assert found is not None
    assert json.loads(found[1])["expected-offset"] == 10
    assert json.loads(found[1])["provided-offset"] == 20
    with_details = OffsetMismatch("expected 10", offset=10, provided_offset=7)
    found = problem_for_error(with_details, 8)
    assert found is not None and json.loads(found[1])["provided-offset"] == 7


def test_problem_for_length_mismatch_starts_at_interop_7() -> None:
    error = LengthMismatch("11 is not 12")
    assert problem_for_error(error, 6) is None
    found = problem_for_error(error, 7)
    assert found is not None
    assert json.loads(found[1])["type"].endswith("#inconsistent-upload-length")


def test_other_errors_have_no_problem_type() -> None:
    assert problem_for_error(UploadNotFound("gone"), 8) is None


# --- whole requests: what tus-js-client 4.3 and the drafts send -----------------------------


def test_tus_js_client_draft_03_creation_without_body() -> None:
    request = parse_ietf_request(
        "POST",
        {
            "Upload-Draft-Interop-Version": "5",
            "Upload-Length": "11",
            "Upload-Metadata": "filename aGVsbG8udHh0",
            "Upload-Complete": "?0",
            "Content-Length": "0",
        },
    )
    assert request == IetfRequest(
        action="create", version=5, complete=False, offset=0, length=11, content_length=0
    )


def test_tus_js_client_draft_05_creation_with_body() -> None:
    request = parse_ietf_request(
        "post",
        {
            "upload-draft-interop-version": "6",
            "upload-length": "11",
            "upload-complete": "?1",
            "content-type": PARTIAL_UPLOAD_TYPE,
            "content-length": "11",
        },
    )
    assert request.action == "create" and request.complete is True
    assert request.length == 11 and request.content_length == 11
    assert request.media_type == PARTIAL_UPLOAD_TYPE


def test_completing_creation_implies_its_length() -> None:
    headers = {INTEROP_HEADER: "8", "Upload-Complete": "?1", "Content-Length": "7"}
    assert parse_ietf_request("POST", headers).length == 7
    headers["Upload-Complete"] = "?0"
    assert parse_ietf_request("POST", headers).length is None


def test_contradicting_lengths_are_refused() -> None:
    headers = {
        INTEROP_HEADER: "8",
        "Upload-Complete": "?1",
        "Upload-Length": "12",
        "Content-Length": "11",
    }
    with pytest.raises(LengthMismatch) as caught:
        parse_ietf_request("POST", headers)
    assert caught.value.details["problem"] == "inconsistent-upload-length"


def test_tus_js_client_draft_05_append() -> None:
    request = parse_ietf_request(
        "PATCH",
        {
            INTEROP_HEADER: "6",
            "Upload-Offset": "4",
            "Content-Type": PARTIAL_UPLOAD_TYPE,
            "Upload-Complete": "?1",
            "Content-Length": "7",
        },
    )
    assert request == IetfRequest(
        action="append", version=6, complete=True, offset=4, length=11, content_length=7
    )


def test_append_without_body_or_completeness() -> None:
    # tus-js-client sends this when a stream ends exactly on a chunk boundary.
    headers = {INTEROP_HEADER: "6", "Upload-Offset": "4", "Content-Type": PARTIAL_UPLOAD_TYPE}
    assert parse_ietf_request("PATCH", headers).complete is None
    headers[INTEROP_HEADER] = "5"
    assert parse_ietf_request("PATCH", headers).complete is True
    assert parse_ietf_request("PATCH", {INTEROP_HEADER: "3", "Upload-Offset": "4"}).complete


def test_draft_03_append_needs_no_content_type_but_draft_05_does() -> None:
    headers = {INTEROP_HEADER: "5", "Upload-Offset": "0", "Upload-Complete": "?0"}
    assert parse_ietf_request("PATCH", headers).complete is False
    headers[INTEROP_HEADER] = "6"
    with pytest.raises(UnsupportedMediaType):
        parse_ietf_request("PATCH", headers)


def test_append_needs_an_offset() -> None:
    with pytest.raises(BadRequest, match="Upload-Offset"):
        parse_ietf_request("PATCH", {INTEROP_HEADER: "4", "Upload-Complete": "?0"})


def test_creation_needs_completeness() -> None:
    with pytest.raises(BadRequest, match="Upload-Incomplete"):
        parse_ietf_request("POST", {INTEROP_HEADER: "3"})
    with pytest.raises(BadRequest, match="Upload-Complete"):
        parse_ietf_request("POST", {INTEROP_HEADER: "8"})


def test_creation_refuses_tus_concatenation_and_offsets() -> None:
    with pytest.raises(BadRequest, match="Upload-Concat"):
        parse_ietf_request(
            "POST", {INTEROP_HEADER: "6", "Upload-Complete": "?0", "Upload-Concat": "partial"}
        )
    with pytest.raises(BadRequest, match="Upload-Offset"):
        parse_ietf_request(
            "POST", {INTEROP_HEADER: "8", "Upload-Complete": "?0", "Upload-Offset": "3"}
        )
    ok = parse_ietf_request(
        "POST", {INTEROP_HEADER: "8", "Upload-Complete": "?0", "Upload-Offset": "0"}
    )
    assert ok.offset == 0


@pytest.mark.parametrize("version", [3, 4, 5])
def test_early_offset_retrieval_refuses_state_headers(version: int) -> None:
    name, value = upload_complete_header(False, version)
    for extra in ({"Upload-Offset": "0"}, {name: value}):
        with pytest.raises(BadRequest):
            parse_ietf_request("HEAD", {INTEROP_HEADER: str(version), **extra})


@pytest.mark.parametrize("version", SUPPORTED_INTEROP_VERSIONS)
@pytest.mark.parametrize(("method", "action"), [("HEAD", "offset"), ("DELETE", "cancel"),
                                                ("OPTIONS", "options")])  # fmt: skip
def test_bodiless_actions(version: int, method: str, action: str) -> None:
    assert parse_ietf_request(method, {INTEROP_HEADER: str(version)}) == IetfRequest(
        action=action,  # type: ignore[arg-type]
        version=version,
    )


def test_later_offset_retrieval_ignores_state_headers() -> None:
    assert (
        parse_ietf_request("HEAD", {INTEROP_HEADER: "8", "Upload-Offset": "9"}).action == "offset"
    )


def test_other_methods_and_missing_version() -> None:
    with pytest.raises(MethodNotAllowed):
        parse_ietf_request("GET", {INTEROP_HEADER: "8"})
    with pytest.raises(BadRequest, match=INTEROP_HEADER):
        parse_ietf_request("HEAD", {})


@pytest.mark.parametrize("value", ["-1", "abc", "1.5", "  "])
def test_malformed_content_length_is_an_invalid_header(value: str) -> None:
    with pytest.raises(InvalidHeader, match="Content-Length"):
        parse_ietf_request(
            "POST", {INTEROP_HEADER: "8", "Upload-Complete": "?1", "Content-Length": value}
        )


@given(
    version=versions,
    complete=st.booleans(),
    offset=st.integers(min_value=0, max_value=MAX_SF - 2**40),
    content_length=st.none() | st.integers(min_value=0, max_value=2**40),
    send_length=st.booleans(),
)
def test_append_round_trips(
    version: int, complete: bool, offset: int, content_length: int | None, send_length: bool
) -> None:
    """Build an append with the response builders (the client side), parse it back."""
    total = offset + (content_length or 0)
    headers = upload_state_headers(
        offset=offset, complete=complete, version=version, length=total if send_length else None
    )
    headers["Content-Type"] = PARTIAL_UPLOAD_TYPE
    if content_length is not None:
        headers["Content-Length"] = str(content_length)
    request = parse_ietf_request("PATCH", headers)
    implied = total if complete and content_length is not None else None
    assert request == IetfRequest(
        action="append",
        version=version,
        complete=complete,
        offset=offset,
        length=total if send_length else implied,
        content_length=content_length,
    )


HEADER_NAMES = [
    INTEROP_HEADER,
    "Upload-Complete",
    "Upload-Incomplete",
    "Upload-Offset",
    "Upload-Length",
    "Content-Length",
    "Content-Type",
    "Upload-Concat",
]
header_values = st.sampled_from(["3", "5", "6", "8", "?0", "?1", "0", "7", PARTIAL_UPLOAD_TYPE])


@given(
    method=st.sampled_from(["POST", "HEAD", "PATCH", "DELETE", "OPTIONS", "GET", "PUT"]),
    headers=st.dictionaries(st.sampled_from(HEADER_NAMES), header_values | st.text(), max_size=8),
)
def test_any_request_parses_or_raises_a_freight_error(method: str, headers: dict[str, str]) -> None:
    try:
        request = parse_ietf_request(method, headers)
    except FreightError as exc:
        assert 400 <= exc.status < 500
        return
    assert request.version in SUPPORTED_INTEROP_VERSIONS


def test_lengths_beyond_structured_integers_are_too_large() -> None:
    headers = {INTEROP_HEADER: "8", "Upload-Complete": "?1", "Content-Length": str(MAX_SF + 1)}
    with pytest.raises(UploadTooLarge):
        parse_ietf_request("POST", headers)
