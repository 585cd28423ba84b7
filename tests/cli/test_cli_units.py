"""Pure pieces of the client: URL forms, response headers, retry policy."""

from __future__ import annotations

import base64
import hashlib

import pytest

from freight.client.errors import ClientError, ProtocolViolation
from freight.client.headers import (
    ContentRange,
    parse_content_range,
    parse_repr_digest,
    parse_upload_offset,
)
from freight.client.http import RetryPolicy
from freight.client.urls import api_files_url, split_file_url, upload_endpoint


@pytest.mark.parametrize(
    ("given", "endpoint"),
    [
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080/files/"),
        ("http://127.0.0.1:8080/", "http://127.0.0.1:8080/files/"),
        ("http://127.0.0.1:8080/files", "http://127.0.0.1:8080/files/"),
        ("http://127.0.0.1:8080/files/", "http://127.0.0.1:8080/files/"),
        ("https://example.org/freight", "https://example.org/freight/files/"),
        ("https://example.org/freight/files/", "https://example.org/freight/files/"),
        (" http://h:1/?q=1#x ", "http://h:1/files/"),
    ],
)
def test_upload_endpoint_accepts_server_or_endpoint(given: str, endpoint: str) -> None:
    assert str(upload_endpoint(given)) == endpoint


@pytest.mark.parametrize("bad", ["ftp://h/files/", "127.0.0.1:8080", "just words", "http://"])
def test_non_http_urls_are_refused(bad: str) -> None:
    with pytest.raises(ClientError):
        upload_endpoint(bad)


@pytest.mark.parametrize(
    ("given", "root", "file_id"),
    [
        ("http://h:1/files/abc", "http://h:1/", "abc"),
        ("http://h:1/files/abc/", "http://h:1/", "abc"),
        ("http://h:1/api/files/abc", "http://h:1/", "abc"),
        ("http://h:1/pre/files/abc", "http://h:1/pre/", "abc"),
        ("http://h:1/files/", "http://h:1/", None),
        ("http://h:1", "http://h:1/", None),
        ("http://h:1/pre", "http://h:1/pre/", None),
    ],
)
def test_split_file_url(given: str, root: str, file_id: str | None) -> None:
    parsed_root, parsed_id = split_file_url(given)
    assert (str(parsed_root), parsed_id) == (root, file_id)


def test_api_files_url_encodes_the_id() -> None:
    root = split_file_url("http://h:1/pre/")[0]
    assert str(api_files_url(root)) == "http://h:1/pre/api/files"
    assert str(api_files_url(root, "a b")) == "http://h:1/pre/api/files/a%20b"


def test_content_range() -> None:
    assert parse_content_range("bytes 5-9/10") == ContentRange(5, 9, 10)
    assert parse_content_range("bytes 0-0/*") == ContentRange(0, 0, None)
    for bad in (None, "", "bytes 9-5/10", "bytes 5-10/10", "items 0-1/2", "bytes ٣-4/5"):
        with pytest.raises(ProtocolViolation):
            parse_content_range(bad)


def test_upload_offset() -> None:
    assert parse_upload_offset(" 42 ") == 42
    for bad in (None, "", "-1", "4.2", "²"):
        with pytest.raises(ProtocolViolation):
            parse_upload_offset(bad)


def test_repr_digest() -> None:
    raw = hashlib.sha256(b"x").digest()
    b64 = base64.b64encode
    value = f"sha-512=:{b64(bytes(64)).decode()}:, sha-256=:{b64(raw).decode()}:"
    assert parse_repr_digest(value) == raw
    assert parse_repr_digest(None) is None
    assert parse_repr_digest("sha-512=:AAAA:") is None
    with pytest.raises(ProtocolViolation):
        parse_repr_digest("sha-256=:not base64!:")


def test_backoff_grows_and_is_capped() -> None:
    policy = RetryPolicy(attempts=10, initial_delay=1.0, max_delay=8.0)
    delays = [policy.delay(n) for n in range(1, 8)]
    assert 0.75 <= delays[0] <= 1.0
    assert 3.0 <= delays[2] <= 4.0
    assert all(6.0 <= d <= 8.0 for d in delays[4:])
