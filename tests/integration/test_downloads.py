"""Downloads of finished uploads, by curl and by a plain HTTP client: ranges, validators,
resumption, the file name and the errors of files that are not there (yet)."""

from __future__ import annotations

import email.utils
import hashlib
import json
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

from .helpers import (
    MiB,
    PatternStream,
    create_upload,
    download,
    patch_stream,
    repr_digest_hex,
    request,
)

SIZE = 3 * MiB + 123
HOSTILE_NAME = "../../etc/passwd\r\nX: y"

needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


@dataclass(frozen=True)
class Stored:
    url: str
    source: PatternStream

    def content(self) -> bytes:
        return b"".join(self.source.chunks())


def upload(base_url: str, source: PatternStream, name: str) -> str:
    url = create_upload(base_url, source.size, {"filename": name})
    if source.size:
        wanted = {"Want-Repr-Digest": "sha-256=10"}
        reply = patch_stream(url, 0, source.chunks(), source.size, headers=wanted)
        assert reply.status == 204
        assert repr_digest_hex(reply.header("Repr-Digest")) == source.sha256()
    return url


@pytest.fixture(params=["local", "memory"])
def freight_server(request: pytest.FixtureRequest, tmp_path: Path, server_factory: Any) -> Any:
    """Every download test runs over local files (sendfile) and over the in-memory store,
    which has no sendfile: its downloads are streamed through a reused buffer."""
    store = request.param
    return server_factory(data_dir=tmp_path / "data", args=["--store", store]).start()


@pytest.fixture
def stored(freight_server: Any) -> Stored:
    source = PatternStream(SIZE, seed=7)
    return Stored(upload(freight_server.url, source, "report 2024.bin"), source)


def etag_of(url: str) -> str:
    etag = request("HEAD", url).header("ETag")
    assert etag is not None
    return etag


def curl(*args: str, fail: bool = True) -> subprocess.CompletedProcess[bytes]:
    options = ["--silent", "--show-error", *(["--fail"] if fail else [])]
    result = subprocess.run(["curl", *options, *args], capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result


@needs_curl
def test_curl_range(stored: Stored, tmp_path: Path) -> None:
    out = tmp_path / "range.bin"
    result = curl("-r", "1000-2999", "-o", str(out), "-D", "-", stored.url)
    head = result.stdout.decode()
    assert head.startswith("HTTP/1.1 206")
    assert f"content-range: bytes 1000-2999/{SIZE}" in head.lower()
    assert out.read_bytes() == stored.content()[1000:3000]


@needs_curl
def test_curl_resumes_a_partial_download(stored: Stored, tmp_path: Path) -> None:
    out = tmp_path / "resumed.bin"
    out.write_bytes(stored.content()[: MiB + 7])
    result = curl("-C", "-", "-o", str(out), "-D", "-", stored.url)
    assert result.stdout.decode().startswith("HTTP/1.1 206")
    assert hashlib.sha256(out.read_bytes()).hexdigest() == stored.source.sha256()


@needs_curl
def test_curl_resume_of_a_complete_download_changes_nothing(stored: Stored, tmp_path: Path) -> None:
    """curl asks for ``bytes=SIZE-``; the 416 with ``bytes */SIZE`` tells it nothing is left."""
    out = tmp_path / "complete.bin"
    out.write_bytes(stored.content())
    result = curl("-C", "-", "-o", str(out), "-D", "-", stored.url, fail=False)
    assert result.stdout.decode().startswith("HTTP/1.1 416")
    assert hashlib.sha256(out.read_bytes()).hexdigest() == stored.source.sha256()


@needs_curl
def test_curl_full_download_matches_repr_digest(stored: Stored, tmp_path: Path) -> None:
    out = tmp_path / "full.bin"
    result = curl("-o", str(out), "-D", "-", stored.url)
    digest_lines = [
        line for line in result.stdout.decode().splitlines() if line.lower().startswith("repr-")
    ]
    assert len(digest_lines) == 1
    digest = repr_digest_hex(digest_lines[0].split(":", 1)[1].strip())
    assert hashlib.sha256(out.read_bytes()).hexdigest() == digest == stored.source.sha256()


def test_head_describes_the_file(stored: Stored) -> None:
    before = time.time()
    reply = request("HEAD", stored.url)
    assert reply.status == 200
    assert reply.body == b""
    assert reply.header("Content-Length") == str(SIZE)
    assert reply.header("Accept-Ranges") == "bytes"
    etag = reply.header("ETag")
    assert etag is not None and etag.startswith('"') and etag.endswith('"'), etag
    assert not etag.startswith("W/")
    modified = email.utils.parsedate_to_datetime(reply.header("Last-Modified") or "")
    assert abs(modified.timestamp() - before) < 60
    disposition = reply.header("Content-Disposition") or ""
    assert disposition.startswith("attachment")
    assert 'filename="report 2024.bin"' in disposition
    assert repr_digest_hex(reply.header("Repr-Digest")) == stored.source.sha256()


def raw_response_head(url: str) -> bytes:
    """The bytes of a HEAD response, read off the socket before any parser sees them."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port or 80), timeout=10) as sock:
        head = f"HEAD {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n\r\n"
        sock.sendall(head.encode())
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


def test_hostile_file_name_is_sanitised(freight_server: Any) -> None:
    url = upload(freight_server.url, PatternStream(10, seed=3), HOSTILE_NAME)
    raw = raw_response_head(url)
    lines = raw.split(b"\r\n")
    assert not any(line.lower().startswith(b"x:") for line in lines), raw
    disposition = next(
        line.decode() for line in lines if line.lower().startswith(b"content-disposition:")
    )
    value = disposition.split(":", 1)[1].strip()
    assert "\r" not in value and "\n" not in value
    assert "/" not in value and "\\" not in value and "%2F" not in value.upper()
    assert ".." not in value
    encoded = value.split("filename*=UTF-8''", 1)[1]
    name = unquote(encoded)
    assert "passwd" in name and "/" not in name and "\n" not in name and "\r" not in name
    assert "etc" not in name


def test_if_range_with_the_etag_gives_the_range(stored: Stored) -> None:
    etag = etag_of(stored.url)
    reply = download(stored.url, {"Range": "bytes=100-199", "If-Range": etag})
    assert reply.status == 206
    assert reply.header("Content-Range") == f"bytes 100-199/{SIZE}"
    assert reply.sha256 == hashlib.sha256(stored.content()[100:200]).hexdigest()


@pytest.mark.parametrize("kind", ["other", "weak"])
def test_if_range_without_a_strong_match_gives_the_whole_file(stored: Stored, kind: str) -> None:
    etag = etag_of(stored.url)
    if_range = f"W/{etag}" if kind == "weak" else '"0123456789abcdef"'
    reply = download(stored.url, {"Range": "bytes=100-199", "If-Range": if_range})
    assert reply.status == 200
    assert reply.header("Content-Range") is None
    assert reply.size == SIZE
    assert reply.sha256 == stored.source.sha256()


@pytest.mark.parametrize("range_", [f"bytes={SIZE}-", f"bytes={SIZE + 10}-{SIZE + 20}"])
def test_range_past_the_end_is_416(stored: Stored, range_: str) -> None:
    reply = request("GET", stored.url, {"Range": range_})
    assert reply.status == 416
    assert reply.header("Content-Range") == f"bytes */{SIZE}"


def test_suffix_range(stored: Stored) -> None:
    reply = request("GET", stored.url, {"Range": "bytes=-500"})
    assert reply.status == 206
    assert reply.header("Content-Range") == f"bytes {SIZE - 500}-{SIZE - 1}/{SIZE}"
    assert reply.body == stored.content()[-500:]


def test_if_none_match_with_the_etag_is_304(stored: Stored) -> None:
    etag = etag_of(stored.url)
    reply = request("GET", stored.url, {"If-None-Match": etag})
    assert reply.status == 304
    assert reply.body == b""
    assert reply.header("ETag") == etag


def test_empty_upload_downloads_as_zero_bytes(freight_server: Any) -> None:
    url = upload(freight_server.url, PatternStream(0), "empty.txt")
    reply = request("GET", url)
    assert reply.status == 200
    assert reply.header("Content-Length") == "0"
    assert reply.body == b""
    assert repr_digest_hex(reply.header("Repr-Digest")) == hashlib.sha256(b"").hexdigest()


def test_unfinished_upload_is_409(freight_server: Any) -> None:
    url = create_upload(freight_server.url, 1000, {"filename": "half.bin"})
    patch_stream(url, 0, [b"x" * 400], 400)
    reply = request("GET", url)
    assert reply.status == 409
    assert (reply.header("Content-Type") or "").startswith("application/json")
    body = json.loads(reply.body)
    assert body["code"] == "ERR_UPLOAD_INCOMPLETE"


def test_unknown_id_is_404(freight_server: Any) -> None:
    reply = request("GET", f"{freight_server.url}/files/doesnotexist0000")
    assert reply.status == 404
    assert json.loads(reply.body)["code"] == "ERR_UPLOAD_NOT_FOUND"
