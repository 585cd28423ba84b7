"""Upload-Metadata codec, safe file names and Content-Disposition."""

from __future__ import annotations

import base64
import contextlib
from urllib.parse import unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from freight.errors import FreightError, InvalidHeader
from freight.protocol.metadata import (
    build_upload_metadata,
    content_disposition,
    parse_upload_metadata,
    relative_path_problem,
    safe_filename,
)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# --- parse -------------------------------------------------------------------------------------


def test_spec_example() -> None:
    header = "filename d29ybGRfZG9taW5hdGlvbl9wbGFuLnBkZg==,is_confidential"
    assert parse_upload_metadata(header) == {
        "filename": "world_domination_plan.pdf",
        "is_confidential": None,
    }


def test_empty_header_is_empty_dict() -> None:
    assert parse_upload_metadata("") == {}
    assert parse_upload_metadata("  ") == {}


def test_spaces_around_pairs_are_tolerated() -> None:
    header = f"name {b64('a.txt')}, type {b64('text/plain')} ,flag"
    assert parse_upload_metadata(header) == {"name": "a.txt", "type": "text/plain", "flag": None}


def test_utf8_value() -> None:
    assert parse_upload_metadata(f"filename {b64('résumé 📄.pdf')}") == {
        "filename": "résumé 📄.pdf"
    }


@pytest.mark.parametrize(
    ("header", "fragment"),
    [
        ("a YQ==,a YQ==", "more than once"),
        ("a YQ==,,b", "empty key-value pair"),
        ("a YQ==,", "empty key-value pair"),
        ("a YQ", "base64"),  # missing padding
        ("a Y!==", "base64"),
        ("a YQ== extra", "base64"),
        ("a  YQ==", "base64"),  # two spaces: the value starts with a space
        ("ключ YQ==", "printable ASCII"),
        ("a\x01 YQ==", "printable ASCII"),
        ("a /w==", "UTF-8"),  # 0xff is not UTF-8
        ("a wqk=é", "base64"),
    ],
)
def test_invalid_metadata(header: str, fragment: str) -> None:
    with pytest.raises(InvalidHeader, match=fragment) as info:
        parse_upload_metadata(header)
    assert "Upload-Metadata" in info.value.message


def test_length_limit_checked_first() -> None:
    header = "a " + "Q" * 100
    with pytest.raises(InvalidHeader, match="longer than 64"):
        parse_upload_metadata(header, max_length=64)
    # The default limit accepts a 64 KiB header.
    big = "k " + base64.b64encode(b"x" * 49_000).decode()
    assert len(big) <= 65536
    assert parse_upload_metadata(big) == {"k": "x" * 49_000}
    with pytest.raises(InvalidHeader, match="longer than 65536"):
        parse_upload_metadata("k " + "A" * 65536)


# --- build -------------------------------------------------------------------------------------


def test_build() -> None:
    assert build_upload_metadata({"filename": "a.txt", "flag": None, "empty": ""}) == (
        f"filename {b64('a.txt')},flag,empty"
    )
    assert build_upload_metadata({}) == ""


@pytest.mark.parametrize("key", ["", "a b", "a,b", "ключ", "a\n"])
def test_build_rejects_bad_keys(key: str) -> None:
    with pytest.raises(InvalidHeader, match="Upload-Metadata key"):
        build_upload_metadata({key: "x"})


def test_build_rejects_unencodable_value() -> None:
    with pytest.raises(InvalidHeader, match="UTF-8"):
        build_upload_metadata({"k": "\udc80"})


keys = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E).filter(lambda c: c != ","),
    min_size=1,
    max_size=20,
)
values = st.none() | st.text(min_size=1)


@given(st.dictionaries(keys, values, max_size=10))
def test_round_trip(metadata: dict[str, str | None]) -> None:
    assert parse_upload_metadata(build_upload_metadata(metadata)) == metadata


@given(st.text(max_size=300))
def test_parse_never_raises_anything_else(header: str) -> None:
    with contextlib.suppress(FreightError):
        parse_upload_metadata(header)


# --- safe_filename -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("report.pdf", "report.pdf"),
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\me\\secret.txt", "secret.txt"),
        ("a/b\\c/d.txt", "d.txt"),
        (".bashrc", "bashrc"),
        ("  . .hidden", "hidden"),
        ("bad\x00name\r\n.txt", "badname.txt"),
        ("gpj\u202eexe.txt", "gpjexe.txt"),
        ("tab\tand\x7fdel", "tabanddel"),
        ("line\u2028sep", "linesep"),
        ("résumé 📄.pdf", "résumé 📄.pdf"),
        ("trailing space ", "trailing space "),
    ],
)
def test_safe_filename(name: str, expected: str) -> None:
    assert safe_filename(name, "fallback") == expected


@pytest.mark.parametrize("name", [None, "", ".", "..", "...", "dir/", "a/..", "\x00\x01", "  "])
def test_safe_filename_fallback(name: str | None) -> None:
    assert safe_filename(name, "upload-123") == "upload-123"


def test_safe_filename_caps_bytes_and_keeps_extension() -> None:
    name = "é" * 300 + ".tar.gz"
    result = safe_filename(name, "x")
    assert len(result.encode()) <= 255
    assert result.endswith("é.gz")
    assert result.startswith("é")


def test_safe_filename_caps_without_extension() -> None:
    name = "📄" * 100  # 400 bytes, 4-byte characters never split
    result = safe_filename(name, "x")
    assert result == "📄" * 63
    long_ext = "a." + "b" * 300
    assert len(safe_filename(long_ext, "x").encode()) == 255


@given(st.text(max_size=400))
def test_safe_filename_properties(name: str) -> None:
    result = safe_filename(name, "fallback")
    assert result
    assert "/" not in result and "\\" not in result
    assert result not in (".", "..")
    assert not result.startswith((".", " "))
    assert len(result.encode("utf-8")) <= 255
    assert all(ord(char) >= 0x20 and char != "\x7f" for char in result)


# --- content_disposition -----------------------------------------------------------------------


def test_content_disposition_ascii() -> None:
    assert content_disposition("report.pdf") == (
        "attachment; filename=\"report.pdf\"; filename*=UTF-8''report.pdf"
    )


def test_content_disposition_escapes_and_encodes() -> None:
    value = content_disposition('a "quoted" \\ name%20é.txt')
    assert value.startswith('attachment; filename="a \\"quoted\\" \\\\ name_20_.txt"; ')
    assert value.endswith("filename*=UTF-8''a%20%22quoted%22%20%5C%20name%2520%C3%A9.txt")


def test_content_disposition_empty() -> None:
    assert content_disposition("") == "attachment"


@given(st.text(min_size=1, max_size=100))
def test_content_disposition_is_a_safe_header(name: str) -> None:
    value = content_disposition(name)
    assert all(" " <= char <= "~" for char in value)
    encoded = value.split("filename*=UTF-8''", 1)[1]
    assert unquote(encoded, errors="replace") == name.encode("utf-8", "replace").decode()


@pytest.mark.parametrize(
    "path",
    ["/", "\\", "/C:x", "C:x", "/a/../b", "..", "a/../b", "a/./b", "a//b", "a/", "a\x00b", "a\nb",
     "x" * 256, "a/" * 2049 + "a"],
)  # fmt: skip
def test_a_hostile_relative_path_is_refused(path: str) -> None:
    assert relative_path_problem(path) is not None
    encoded = base64.b64encode(path.encode()).decode()
    with pytest.raises(InvalidHeader):
        parse_upload_metadata(f"relativePath {encoded}")


@pytest.mark.parametrize(
    "path",
    ["a.txt", "photos/2024/a.jpg", "é/ü.txt", "a b/c..d", "x" * 255, "/photos/a.jpg", "\\a\\b"],
)  # Uppy's folder drops send "/folder/file"
def test_a_relative_path_is_kept(path: str) -> None:
    assert relative_path_problem(path) is None
    encoded = base64.b64encode(path.encode()).decode()
    assert parse_upload_metadata(f"relativePath {encoded}") == {"relativePath": path}
