"""Range, If-Range and entity-tag matching."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from freight.errors import FreightError, InvalidHeader, RangeNotSatisfiable
from freight.protocol.ranges import (
    ByteRange,
    etag_matches,
    etag_matches_strong,
    if_range_allows_partial,
    parse_content_range,
    parse_range,
    unsatisfied_content_range,
)
from freight.protocol.tus import format_http_date

# --- parse_range -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        ("bytes=0-499", 1000, ByteRange(0, 499)),
        ("bytes=500-999", 1000, ByteRange(500, 999)),
        ("bytes=500-", 1000, ByteRange(500, 999)),
        ("bytes=-500", 1000, ByteRange(500, 999)),
        ("bytes=-5000", 1000, ByteRange(0, 999)),
        ("bytes=900-5000", 1000, ByteRange(900, 999)),
        ("bytes=0-0", 1, ByteRange(0, 0)),
        ("Bytes=1-2", 10, ByteRange(1, 2)),
        ("bytes=0-" + "9" * 30, 10, ByteRange(0, 9)),
        ("bytes=-" + "9" * 30, 10, ByteRange(0, 9)),
    ],
)
def test_single_ranges(header: str, size: int, expected: ByteRange) -> None:
    assert parse_range(header, size) == expected


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "bytes=0-1,5-6",  # multiple ranges: we serve the whole file
        "bytes=0-1, 5-6",
        "items=0-1",
        "bytes=5-1",  # last < first is invalid, so ignored
        "bytes=-",
        "bytes=a-b",
        "bytes= 0-1",
        "bytes=0-1-2",
        "bytes=\u0661-\u0662",  # non-ASCII digits
        "bytes=0-" + "9" * 5000,  # too many digits for int()
    ],
)
def test_ignored_ranges(header: str | None) -> None:
    assert parse_range(header, 1000) is None


@pytest.mark.parametrize(
    ("header", "size"),
    [("bytes=1000-", 1000), ("bytes=1000-2000", 1000), ("bytes=-0", 1000), ("bytes=0-", 0)],
)
def test_unsatisfiable(header: str, size: int) -> None:
    with pytest.raises(RangeNotSatisfiable) as info:
        parse_range(header, size)
    assert info.value.size == size
    assert info.value.status == 416


def test_suffix_of_empty_file_serves_whole() -> None:
    assert parse_range("bytes=-5", 0) is None
    with pytest.raises(RangeNotSatisfiable):
        parse_range("bytes=-0", 0)


def test_byte_range_helpers() -> None:
    byte_range = ByteRange(10, 19)
    assert byte_range.length == 10
    assert byte_range.stop == 20
    assert byte_range.content_range(100) == "bytes 10-19/100"
    assert unsatisfied_content_range(100) == "bytes */100"
    with pytest.raises(ValueError):
        ByteRange(5, 4)
    with pytest.raises(ValueError):
        ByteRange(-1, 4)


def reference_range(first: int | None, last: int | None, size: int) -> tuple[int, int] | None:
    """Bytes an RFC 9110 range selects, via slicing; None when unsatisfiable."""
    data = range(size)
    if first is None:
        assert last is not None
        selected = data[-last:] if last else data[0:0]
    else:
        end = size if last is None else last + 1
        selected = data[first:end]
    return (selected[0], selected[-1]) if len(selected) else None


@given(
    size=st.integers(0, 2000),
    first=st.none() | st.integers(0, 2500),
    last=st.none() | st.integers(0, 2500),
)
def test_agrees_with_reference(size: int, first: int | None, last: int | None) -> None:
    if first is None and last is None:
        return
    header = f"bytes={'' if first is None else first}-{'' if last is None else last}"
    if first is not None and last is not None and last < first:
        assert parse_range(header, size) is None
        return
    expected = reference_range(first, last, size)
    if expected is None and first is None and size == 0 and last:
        assert parse_range(header, size) is None  # non-empty suffix of an empty file
    elif expected is None:
        with pytest.raises(RangeNotSatisfiable):
            parse_range(header, size)
    else:
        result = parse_range(header, size)
        assert result is not None
        assert (result.start, result.end_inclusive) == expected


@given(st.text(max_size=60), st.integers(0, 10**12))
def test_parse_range_never_raises_anything_else(header: str, size: int) -> None:
    with contextlib.suppress(FreightError):
        parse_range(header, size)


# --- If-Range ----------------------------------------------------------------------------------

ETAG = '"abc123"'
MTIME = 1_700_000_000.75


@pytest.mark.parametrize(
    ("if_range", "allowed"),
    [
        (None, True),
        ('"abc123"', True),
        ('"other"', False),
        ('W/"abc123"', False),  # weak tags never match If-Range
        (format_http_date(MTIME), True),
        (format_http_date(MTIME + 1), False),
        (format_http_date(MTIME - 1), False),
        ("not a date", False),
        ('"unterminated', False),
        ("", False),
    ],
)
def test_if_range(if_range: str | None, allowed: bool) -> None:
    assert if_range_allows_partial(if_range, ETAG, MTIME) is allowed


def test_if_range_with_weak_etag_never_matches() -> None:
    assert not if_range_allows_partial('W/"abc"', 'W/"abc"', MTIME)


@given(st.text(max_size=60))
def test_if_range_never_raises(value: str) -> None:
    assert isinstance(if_range_allows_partial(value, ETAG, MTIME), bool)


# --- If-None-Match / If-Match ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "weak", "strong"),
    [
        (None, False, False),
        ("*", True, True),
        ('"abc123"', True, True),
        ('W/"abc123"', True, False),
        ('"x", "abc123"', True, True),
        ('"x",W/"abc123"', True, False),
        ('"x,y", "abc123"', True, True),  # commas inside a tag are part of it
        ('"x"', False, False),
        ('"abc123" "x"', False, False),  # missing comma: malformed
        ("abc123", False, False),
        ('"abc123", junk', False, False),
        ("", False, False),
        (",", False, False),
    ],
)
def test_etag_lists(header: str | None, weak: bool, strong: bool) -> None:
    assert etag_matches(header, ETAG) is weak
    assert etag_matches_strong(header, ETAG) is strong


def test_weak_representation_etag() -> None:
    assert etag_matches('"abc"', 'W/"abc"')
    assert not etag_matches_strong('W/"abc"', 'W/"abc"')
    assert not etag_matches('"abc"', "garbage")


@given(st.text(max_size=80))
def test_etag_matching_never_raises(header: str) -> None:
    assert isinstance(etag_matches(header, ETAG), bool)
    assert isinstance(etag_matches_strong(header, ETAG), bool)


# --- parse_content_range (a request body's place) --------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes 0-499/1000", (ByteRange(0, 499), 1000)),
        ("bytes 500-999/1000", (ByteRange(500, 999), 1000)),
        ("bytes 7-7/*", (ByteRange(7, 7), None)),
        ("BYTES 0-0/1", (ByteRange(0, 0), 1)),
        (" bytes 1-2/3 ", (ByteRange(1, 2), 3)),
    ],
)
def test_content_ranges(header: str, expected: tuple[ByteRange, int | None]) -> None:
    assert parse_content_range(header) == expected


@pytest.mark.parametrize(
    "header",
    [
        "bytes 0-1000/1000",  # RFC 9110: a complete length at or below last-pos is invalid
        "bytes 5-4/10",
        "bytes */10",
        "bytes=0-4/10",
        "bytes 0-4",
        "bytes -4/10",
        "bits 0-4/10",
        "bytes 0-4/10, 5-9/10",
        "bytes 0-" + "9" * 20 + "/*",
        "bytes \u0660-\u0664/10",  # non-ASCII (Arabic-Indic) digits
        "",
    ],
)
def test_invalid_content_ranges(header: str) -> None:
    with pytest.raises(InvalidHeader):
        parse_content_range(header)


@given(st.text(max_size=60))
def test_parse_content_range_never_raises_anything_else(header: str) -> None:
    with contextlib.suppress(InvalidHeader):
        first, length = parse_content_range(header)
        assert length is None or first.stop <= length
