"""Fixtures of the interop tests: random files on disk, checks of what the server stored.

Files are written and hashed in 1 MiB blocks, so a test never holds a whole file in memory.
pytest runs with ``--import-mode=importlib``, so test modules cannot import a helper module
from this folder: the helpers reach them as fixtures.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pytest

MiB = 1024 * 1024
BLOCK = MiB


class Server(Protocol):
    """What the tests use of a server from the ``freight_server`` / ``server_factory`` fixtures."""

    url: str

    def start(self, timeout: float = ...) -> Server: ...


@dataclass(frozen=True)
class LocalFile:
    path: Path
    size: int
    sha256: bytes


@dataclass(frozen=True)
class StoredFile:
    size: int
    sha256: bytes
    repr_digest: str | None


def write_random_file(path: Path, size: int) -> LocalFile:
    """Write ``size`` random bytes to ``path`` and return its SHA-256."""
    digest = hashlib.sha256()
    with path.open("wb") as out:
        left = size
        while left:
            block = os.urandom(min(BLOCK, left))
            digest.update(block)
            out.write(block)
            left -= len(block)
    return LocalFile(path=path, size=size, sha256=digest.digest())


def download(url: str, headers: dict[str, str] | None = None) -> StoredFile:
    """GET ``url`` and hash the body as it streams in."""
    request = urllib.request.Request(url, headers=headers or {})
    digest = hashlib.sha256()
    size = 0
    try:
        response = urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as exc:
        body = exc.read(2000).decode(errors="replace")
        raise AssertionError(f"GET {url} answered {exc.code}: {body}") from None
    with response:
        assert response.status == 200, f"GET {url} answered {response.status}"
        repr_digest = response.headers.get("Repr-Digest")
        while block := response.read(BLOCK):
            digest.update(block)
            size += len(block)
    return StoredFile(size=size, sha256=digest.digest(), repr_digest=repr_digest)


def sha256_field(repr_digest: str) -> bytes | None:
    """The sha-256 value of an RFC 9530 ``Repr-Digest`` header, if it has one."""
    for member in repr_digest.split(","):
        name, _, value = member.strip().partition("=")
        if name.strip() == "sha-256":
            return base64.b64decode(value.strip().strip(":"))
    return None


def head_offset(url: str, headers: dict[str, str] | None = None) -> int:
    """The ``Upload-Offset`` a tus HEAD reports for an unfinished upload."""
    request = urllib.request.Request(
        url, method="HEAD", headers={"Tus-Resumable": "1.0.0", **(headers or {})}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        offset = response.headers.get("Upload-Offset")
        assert offset is not None, f"HEAD {url} answered without Upload-Offset"
        return int(offset)


def listed_sha256(
    base_url: str, upload_url: str, headers: dict[str, str] | None = None
) -> str | None:
    """The hex SHA-256 that ``GET /api/files`` lists for the upload at ``upload_url``."""
    file_id = upload_url.rstrip("/").rsplit("/", 1)[1]
    request = urllib.request.Request(f"{base_url}/api/files", headers=headers or {})
    with urllib.request.urlopen(request, timeout=30) as response:
        listing = json.load(response)
    for entry in listing["files"]:
        if entry["id"] == file_id:
            return str(entry["sha256"])
    return None


def assert_stored(
    base_url: str, upload_url: str, local: LocalFile, headers: dict[str, str] | None = None
) -> None:
    """The server serves exactly ``local``'s bytes at ``upload_url`` and knows their digest."""
    assert upload_url.startswith(f"{base_url}/files/"), upload_url
    stored = download(upload_url, headers)
    assert stored.size == local.size
    assert stored.sha256.hex() == local.sha256.hex()
    if stored.repr_digest is not None:
        assert sha256_field(stored.repr_digest) == local.sha256, stored.repr_digest
    assert listed_sha256(base_url, upload_url, headers) == local.sha256.hex()


@pytest.fixture
def random_file(tmp_path: Path) -> Callable[..., LocalFile]:
    """``random_file(size, name="upload.bin")`` writes random bytes under ``tmp_path``."""

    def make(size: int, name: str = "upload.bin") -> LocalFile:
        return write_random_file(tmp_path / name, size)

    return make


@pytest.fixture
def check_stored() -> Callable[..., None]:
    """``check_stored(base_url, upload_url, local, headers=None)``: see :func:`assert_stored`."""
    return assert_stored


@pytest.fixture
def tus_offset() -> Callable[..., int]:
    """``tus_offset(upload_url, headers=None)``: the offset a tus HEAD reports."""
    return head_offset


@pytest.fixture
def repr_sha256() -> Callable[[str], bytes | None]:
    """``repr_sha256(header)``: the sha-256 bytes of a ``Repr-Digest`` header value."""
    return sha256_field
