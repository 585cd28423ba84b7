"""A small streaming HTTP/tus client for the integration tests, on ``http.client`` only.

It depends on nothing of freight, so the tests check the server against an independent
reading of the protocol: create an upload, PATCH a body produced by a generator (never
held in memory), HEAD the offset, download while hashing. :class:`PatternStream` gives the
deterministic, non-repeating bytes those bodies are made of.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import random
import socket
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

__all__ = [
    "MiB",
    "PatternStream",
    "Reply",
    "create_upload",
    "download",
    "free_port",
    "head_offset",
    "patch_stream",
    "repr_digest_hex",
    "request",
    "sha256_of_file",
    "upload_metadata",
]

MiB = 1024 * 1024
TUS = {"Tus-Resumable": "1.0.0"}
OFFSET_STREAM = "application/offset+octet-stream"
_HEADER = 32  # bytes of each block that vary with the block's index


class PatternStream:
    """``size`` deterministic bytes in blocks that all differ; any range can be regenerated.

    Block ``i`` is ``sha256(seed, i)`` followed by a fixed pseudo-random tail, so a byte
    written at the wrong offset or a block replayed twice changes every hash of the stream.
    """

    def __init__(self, size: int, seed: int = 0, block_size: int = MiB) -> None:
        self.size = size
        self.seed = seed
        self.block_size = block_size
        self._tail = random.Random(seed).randbytes(block_size - _HEADER)

    def block(self, index: int) -> bytes:
        header = hashlib.sha256(f"{self.seed}:{index}".encode()).digest()
        return header + self._tail

    def chunks(self, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """The bytes of ``[start, end)`` in pieces of at most one block."""
        end = self.size if end is None else end
        position = start
        while position < end:
            index, skip = divmod(position, self.block_size)
            piece = self.block(index)[skip : skip + end - position]
            yield piece
            position += len(piece)

    def sha256(self, end: int | None = None) -> str:
        """SHA-256 of the first ``end`` bytes (all of them by default)."""
        hasher = hashlib.sha256()
        for chunk in self.chunks(0, end):
            hasher.update(chunk)
        return hasher.hexdigest()

    def write_to(self, path: Path) -> Path:
        with path.open("wb") as file:
            for chunk in self.chunks():
                file.write(chunk)
        return path


@dataclass(frozen=True)
class Reply:
    """An HTTP response whose body was read (or hashed, for downloads)."""

    status: int
    headers: http.client.HTTPMessage
    body: bytes = b""
    size: int = 0
    sha256: str = ""

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def json(self) -> object:
        return json.loads(self.body)


def free_port() -> int:
    """A loopback port that was free a moment ago (for a server restarted on the same port)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _connect(url: str, timeout: float) -> tuple[http.client.HTTPConnection, str]:
    parts = urlsplit(url)
    assert parts.scheme == "http" and parts.hostname, url
    conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return conn, target


def request(
    method: str,
    url: str,
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
    timeout: float = 30.0,
) -> Reply:
    """One request on a fresh connection; the whole response body is returned."""
    conn, target = _connect(url, timeout)
    try:
        conn.request(method, target, body=body, headers=dict(headers or {}))
        resp = conn.getresponse()
        data = resp.read()
        return Reply(resp.status, resp.headers, data, len(data))
    finally:
        conn.close()


def download(url: str, headers: Mapping[str, str] | None = None, timeout: float = 60.0) -> Reply:
    """GET ``url`` streaming: the body is hashed and counted, never kept."""
    conn, target = _connect(url, timeout)
    try:
        conn.request("GET", target, headers=dict(headers or {}))
        resp = conn.getresponse()
        hasher = hashlib.sha256()
        size = 0
        buffer = memoryview(bytearray(MiB))
        while got := resp.readinto(buffer):
            hasher.update(buffer[:got])
            size += got
        return Reply(resp.status, resp.headers, size=size, sha256=hasher.hexdigest())
    finally:
        conn.close()


def upload_metadata(metadata: Mapping[str, str]) -> str:
    """tus ``Upload-Metadata``: ``key base64(value)`` pairs separated by commas."""
    return ",".join(
        f"{key} {base64.b64encode(value.encode()).decode()}" for key, value in metadata.items()
    )


def create_upload(base_url: str, length: int, metadata: Mapping[str, str] | None = None) -> str:
    """POST a tus creation request; returns the absolute upload URL."""
    headers = {**TUS, "Upload-Length": str(length)}
    if metadata:
        headers["Upload-Metadata"] = upload_metadata(metadata)
    reply = request("POST", f"{base_url}/files/", headers)
    assert reply.status == 201, (reply.status, reply.body)
    location = reply.header("Location")
    assert location, "a created upload must have a Location"
    return urljoin(f"{base_url}/files/", location)


def head_offset(upload_url: str) -> int:
    """The upload's ``Upload-Offset`` as a tus HEAD reports it."""
    reply = request("HEAD", upload_url, TUS)
    assert reply.status == 200, reply.status
    offset = reply.header("Upload-Offset")
    assert offset is not None and offset.isdigit(), offset
    return int(offset)


def patch_stream(
    upload_url: str,
    offset: int,
    chunks: Iterable[bytes],
    length: int,
    *,
    on_sent: Callable[[int], None] | None = None,
    hasher: hashlib._Hash | None = None,
    timeout: float = 120.0,
    headers: Mapping[str, str] | None = None,
) -> Reply:
    """PATCH ``length`` bytes taken from ``chunks`` at ``offset`` with a Content-Length body.

    ``on_sent`` gets the number of body bytes handed to the socket after each chunk;
    ``hasher`` is fed every chunk sent. Connection errors propagate to the caller.
    """
    conn, target = _connect(upload_url, timeout)
    try:
        conn.putrequest("PATCH", target, skip_accept_encoding=True)
        sent = {
            **TUS,
            "Upload-Offset": str(offset),
            "Content-Type": OFFSET_STREAM,
            "Content-Length": str(length),
            **(headers or {}),
        }
        for name, value in sent.items():
            conn.putheader(name, value)
        conn.endheaders()
        sent = 0
        for chunk in chunks:
            conn.send(chunk)
            if hasher is not None:
                hasher.update(chunk)
            sent += len(chunk)
            if on_sent is not None:
                on_sent(sent)
        resp = conn.getresponse()
        return Reply(resp.status, resp.headers, resp.read())
    finally:
        conn.close()


def repr_digest_hex(value: str | None) -> str | None:
    """The SHA-256 in an RFC 9530 ``Repr-Digest`` (``sha-256=:<base64>:``), as hex."""
    if value is None:
        return None
    for member in value.split(","):
        key, _, encoded = member.strip().partition("=")
        if key.strip().lower() == "sha-256" and encoded.startswith(":") and encoded.endswith(":"):
            return base64.b64decode(encoded[1:-1]).hex()
    return None


def sha256_of_file(path: Path, end: int | None = None) -> str:
    """SHA-256 of the first ``end`` bytes of ``path`` (the whole file by default)."""
    hasher = hashlib.sha256()
    remaining = path.stat().st_size if end is None else end
    with path.open("rb") as file:
        while remaining > 0:
            chunk = file.read(min(MiB, remaining))
            if not chunk:
                raise AssertionError(f"{path} ends {remaining} bytes short")
            hasher.update(chunk)
            remaining -= len(chunk)
    return hasher.hexdigest()
