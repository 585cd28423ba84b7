"""The IETF resumable-upload adapter, interop versions 3-8, against a real server process.

Requests go over raw sockets so the ``104 Upload Resumption Supported`` interim responses are
visible (``http.client`` would take a 104 for the final answer). Downloads and JSON go through
``urllib``. Where tus-js-client is installed under ``tests/interop``, it uploads too.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

VERSIONS = [3, 4, 5, 6, 7, 8]
MODERN = [6, 7, 8]  # partial-upload media type, Upload-Limit, problem types
PARTIAL = "application/partial-upload"
PROBLEM_URI = "https://iana.org/assignments/http-problem-types#"
INTEROP = Path(__file__).resolve().parents[1] / "interop"


@dataclass
class Reply:
    """One exchange: the interim (1xx) answers in order, then the final one."""

    status: int
    headers: dict[str, str]
    body: bytes
    interim: list[tuple[int, dict[str, str]]] = field(default_factory=list)

    def json(self) -> Any:
        return json.loads(self.body)


def _read_head(stream: Any) -> tuple[int, dict[str, str]]:
    status_line = stream.readline().decode("latin-1")
    assert status_line.startswith("HTTP/1."), f"not a status line: {status_line!r}"
    headers: dict[str, str] = {}
    while (line := stream.readline().decode("latin-1").rstrip("\r\n")) != "":
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers


def _read_reply(stream: Any, method: str) -> Reply:
    interim: list[tuple[int, dict[str, str]]] = []
    while True:
        status, headers = _read_head(stream)
        if status >= 200:
            break
        interim.append((status, headers))
    no_body = method == "HEAD" or status in (204, 304)
    size = int(headers.get("content-length", "0"))
    body = b"" if no_body else stream.read(size)
    return Reply(status, headers, body, interim)


def _request_head(
    server: Any, method: str, path: str, headers: Mapping[str, str], http: str = "HTTP/1.1"
) -> bytes:
    lines = [f"{method} {path} {http}", f"Host: 127.0.0.1:{server.port}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def send(
    server: Any,
    method: str,
    path: str,
    headers: Mapping[str, str],
    body: bytes = b"",
    *,
    http: str = "HTTP/1.1",
) -> Reply:
    """One request on a fresh connection; ``Content-Length`` is added for a body."""
    sent = dict(headers)
    if body or method in ("POST", "PATCH"):
        sent.setdefault("Content-Length", str(len(body)))
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(_request_head(server, method, path, sent, http) + body)
        return _read_reply(sock.makefile("rb"), method)


def state(version: int, complete: bool) -> dict[str, str]:
    """The interop header plus the version's completeness field (inverted in interop 3)."""
    headers = {"Upload-Draft-Interop-Version": str(version)}
    if version == 3:
        headers["Upload-Incomplete"] = "?0" if complete else "?1"
    else:
        headers["Upload-Complete"] = "?1" if complete else "?0"
    return headers


def is_complete(reply: Reply, version: int) -> bool:
    if version == 3:
        return reply.headers["upload-incomplete"] == "?0"
    return reply.headers["upload-complete"] == "?1"


def append_headers(version: int, offset: int, complete: bool) -> dict[str, str]:
    content_type = PARTIAL if version >= 6 else "application/octet-stream"
    return {**state(version, complete), "Upload-Offset": str(offset), "Content-Type": content_type}


def interop(version: int) -> dict[str, str]:
    return {"Upload-Draft-Interop-Version": str(version)}


def check_ietf_reply(reply: Reply, version: int) -> None:
    assert reply.headers["upload-draft-interop-version"] == str(version)
    assert "tus-resumable" not in reply.headers


def repr_digest(data: bytes) -> str:
    return f"sha-256=:{base64.b64encode(hashlib.sha256(data).digest()).decode()}:"


def download(server: Any, path: str) -> tuple[bytes, dict[str, str]]:
    with urllib.request.urlopen(f"{server.url}{path}", timeout=30) as response:
        return response.read(), {k.lower(): v for k, v in response.headers.items()}


def create(server: Any, version: int, body: bytes = b"", **extra: str) -> Reply:
    headers = {**state(version, complete=False), **extra}
    reply = send(server, "POST", "/files/", headers, body)
    assert reply.status == 201, reply.body
    return reply


# --- the whole protocol, per version ----------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_create_with_complete_body_then_download(freight_server: Any, version: int) -> None:
    data = os.urandom(3 * 1024 * 1024 + 11)
    headers = {**state(version, complete=True), "Content-Disposition": 'inline; filename="a.bin"'}
    headers["Want-Repr-Digest"] = "sha-256=10"
    reply = send(freight_server, "POST", "/files/", headers, data)
    assert reply.status == 201, reply.body
    check_ietf_reply(reply, version)
    assert reply.headers["location"].startswith("/files/")
    assert reply.headers["upload-offset"] == str(len(data))
    assert is_complete(reply, version)
    assert reply.headers["repr-digest"] == repr_digest(data)
    assert ("upload-limit" in reply.headers) == (version >= 6)
    stored, headers = download(freight_server, reply.headers["location"])
    assert hashlib.sha256(stored).digest() == hashlib.sha256(data).digest()
    assert 'filename="a.bin"' in headers["content-disposition"]


@pytest.mark.parametrize("version", VERSIONS)
def test_create_empty_then_head_and_two_appends(freight_server: Any, version: int) -> None:
    data = os.urandom(2 * 1024 * 1024 + 5)
    half = len(data) // 2
    location = create(freight_server, version).headers["location"]

    head = send(freight_server, "HEAD", location, interop(version))
    assert head.status == 204
    check_ietf_reply(head, version)
    assert head.headers["upload-offset"] == "0"
    assert not is_complete(head, version)
    assert head.headers["cache-control"] == "no-store"
    assert "upload-length" not in head.headers  # deferred

    first = send(freight_server, "PATCH", location, append_headers(version, 0, False), data[:half])
    assert first.status == (201 if version < 6 else 204), first.body
    check_ietf_reply(first, version)
    assert first.headers["upload-offset"] == str(half)
    assert not is_complete(first, version)

    wanted = {**append_headers(version, half, True), "Want-Repr-Digest": "sha-256=10"}
    last = send(freight_server, "PATCH", location, wanted, data[half:])
    assert last.status == (201 if version < 6 else 204), last.body
    assert last.headers["upload-offset"] == str(len(data))
    assert is_complete(last, version)
    assert last.headers["repr-digest"] == repr_digest(data)

    head = send(freight_server, "HEAD", location, interop(version))
    assert head.headers["upload-length"] == str(len(data))
    assert is_complete(head, version)
    assert download(freight_server, location)[0] == data


@pytest.mark.parametrize("version", MODERN)
def test_known_length_completes_an_append_without_upload_complete(
    freight_server: Any, version: int
) -> None:
    """tus-js-client omits Upload-Complete on an empty last PATCH; the length decides."""
    data = os.urandom(1000)
    location = create(freight_server, version, **{"Upload-Length": "1000"}).headers["location"]
    headers = append_headers(version, 0, True)
    del headers["Upload-Complete"]
    reply = send(freight_server, "PATCH", location, headers, data)
    assert reply.status == 204, reply.body
    assert reply.headers["upload-complete"] == "?1"
    assert download(freight_server, location)[0] == data


@pytest.mark.parametrize("version", VERSIONS)
def test_offset_mismatch_is_409_with_the_offset(freight_server: Any, version: int) -> None:
    location = create(freight_server, version, b"x" * 100).headers["location"]
    reply = send(freight_server, "PATCH", location, append_headers(version, 40, False), b"y" * 10)
    assert reply.status == 409
    check_ietf_reply(reply, version)
    assert reply.headers["upload-offset"] == "100"
    if version >= 6:
        assert reply.headers["content-type"] == "application/problem+json"
        problem = reply.json()
        assert problem["type"] == PROBLEM_URI + "mismatching-upload-offset"
        assert problem["expected-offset"] == 100
        assert problem["provided-offset"] == 40
    head = send(freight_server, "HEAD", location, interop(version))
    assert head.headers["upload-offset"] == "100"


@pytest.mark.parametrize("version", VERSIONS)
def test_append_media_type(freight_server: Any, version: int) -> None:
    location = create(freight_server, version).headers["location"]
    headers = {**append_headers(version, 0, False), "Content-Type": "application/octet-stream"}
    reply = send(freight_server, "PATCH", location, headers, b"abc")
    if version < 6:
        assert reply.status == 201  # any media type before interop 6
        return
    assert reply.status == 415
    check_ietf_reply(reply, version)
    assert reply.headers["accept-patch"] == PARTIAL
    assert send(freight_server, "HEAD", location, interop(version)).headers["upload-offset"] == "0"


@pytest.mark.parametrize("version", VERSIONS)
def test_append_to_a_completed_upload(freight_server: Any, version: int) -> None:
    reply = send(freight_server, "POST", "/files/", state(version, True), b"done")
    location = reply.headers["location"]
    again = send(freight_server, "PATCH", location, append_headers(version, 4, False), b"more")
    check_ietf_reply(again, version)
    if version < 6:
        assert again.status == 409  # no problem types yet: the offset tells the client
        assert again.headers["upload-offset"] == "4"
    else:
        assert again.status == 400
        assert again.json()["type"] == PROBLEM_URI + "completed-upload"
    assert download(freight_server, location)[0] == b"done"


@pytest.mark.parametrize("version", [7, 8])
def test_contradicting_length_is_inconsistent_upload_length(
    freight_server: Any, version: int
) -> None:
    location = create(freight_server, version, **{"Upload-Length": "10"}).headers["location"]
    headers = {**append_headers(version, 0, False), "Upload-Length": "11"}
    reply = send(freight_server, "PATCH", location, headers, b"abc")
    assert reply.status == 400
    assert reply.json()["type"] == PROBLEM_URI + "inconsistent-upload-length"


@pytest.mark.parametrize("version", VERSIONS)
def test_cancel_then_head_is_404(freight_server: Any, version: int) -> None:
    location = create(freight_server, version, b"abc").headers["location"]
    reply = send(freight_server, "DELETE", location, interop(version))
    assert reply.status == 204
    check_ietf_reply(reply, version)
    head = send(freight_server, "HEAD", location, interop(version))
    assert head.status == 404
    check_ietf_reply(head, version)


@pytest.mark.parametrize("version", VERSIONS)
def test_options_announces_limits_and_patch_type(freight_server: Any, version: int) -> None:
    reply = send(freight_server, "OPTIONS", "/files/", interop(version))
    assert reply.status == 200
    check_ietf_reply(reply, version)
    assert reply.headers["accept-patch"] == PARTIAL
    if version >= 6:
        age_key = "expires" if version == 6 else "max-age"
        assert f"{age_key}=86400" in reply.headers["upload-limit"]
    else:
        assert "upload-limit" not in reply.headers


@pytest.mark.parametrize("value", ["abc", "9", "2", "?1", "-6", "6, 7"])
def test_unsupported_interop_version_is_400(freight_server: Any, value: str) -> None:
    reply = send(freight_server, "POST", "/files/", {"Upload-Draft-Interop-Version": value})
    assert reply.status == 400
    assert reply.interim == []


@pytest.mark.parametrize("version", VERSIONS)
def test_zero_length_upload_completes_at_creation(freight_server: Any, version: int) -> None:
    reply = create(freight_server, version, **{"Upload-Length": "0"})
    assert is_complete(reply, version)
    assert download(freight_server, reply.headers["location"])[0] == b""


def test_upload_metadata_names_the_file(freight_server: Any) -> None:
    name = base64.b64encode("naïve.txt".encode()).decode()
    headers = {**state(6, True), "Upload-Metadata": f"filename {name},filetype dGV4dA=="}
    reply = send(freight_server, "POST", "/files/", headers, b"hello")
    assert reply.status == 201
    _, headers = download(freight_server, reply.headers["location"])
    assert "na%C3%AFve.txt" in headers["content-disposition"]


def test_upload_concat_is_refused(freight_server: Any) -> None:
    reply = send(freight_server, "POST", "/files/", {**state(6, False), "Upload-Concat": "partial"})
    assert reply.status == 400
    check_ietf_reply(reply, 6)


# --- 104 Upload Resumption Supported ---------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_creation_sends_104_with_location(freight_server: Any, version: int) -> None:
    reply = send(freight_server, "POST", "/files/", state(version, True), b"x" * 1000)
    assert reply.status == 201
    assert [status for status, _ in reply.interim] == [104]
    interim = reply.interim[0][1]
    assert interim["upload-draft-interop-version"] == str(version)
    assert interim["location"] == reply.headers["location"]
    assert ("upload-limit" in interim) == (version >= 6)


def test_104_comes_before_the_body_is_read_and_after_100_continue(freight_server: Any) -> None:
    data = os.urandom(4096)
    headers = {**state(8, True), "Content-Length": str(len(data)), "Expect": "100-continue"}
    with socket.create_connection(("127.0.0.1", freight_server.port), timeout=30) as sock:
        stream = sock.makefile("rb")
        sock.sendall(_request_head(freight_server, "POST", "/files/", headers))
        assert _read_head(stream)[0] == 100
        status, interim = _read_head(stream)  # no body sent yet
        assert status == 104
        assert interim["location"].startswith("/files/")
        assert "upload-limit" in interim
        sock.sendall(data)
        reply = _read_reply(stream, "POST")
    assert reply.status == 201
    assert reply.headers["location"] == interim["location"]
    assert download(freight_server, interim["location"])[0] == data


def test_a_dropped_creation_resumes_at_the_104_location(freight_server: Any) -> None:
    data = os.urandom(3 * 1024 * 1024)
    headers = {**state(6, True), "Content-Length": str(len(data))}
    with socket.create_connection(("127.0.0.1", freight_server.port), timeout=30) as sock:
        stream = sock.makefile("rb")
        sock.sendall(_request_head(freight_server, "POST", "/files/", headers) + data[:1000])
        status, interim = _read_head(stream)
        assert status == 104
        stream.close()  # the socket stays open while its file object is
    location = interim["location"]
    for _ in range(50):  # the server may still be settling the dropped request: retry
        offset = int(send(freight_server, "HEAD", location, interop(6)).headers["upload-offset"])
        assert 0 <= offset <= 1000
        headers = append_headers(6, offset, True)
        reply = send(freight_server, "PATCH", location, headers, data[offset:])
        if reply.status not in (409, 423):
            break
        time.sleep(0.1)
    assert reply.status == 204, reply.body
    assert download(freight_server, location)[0] == data


def test_no_104_for_http_1_0(freight_server: Any) -> None:
    reply = send(freight_server, "POST", "/files/", state(5, True), b"abc", http="HTTP/1.0")
    assert reply.status == 201
    assert reply.interim == []


# --- limits ----------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_too_large_is_413_with_upload_limit(
    tmp_path: Path, server_factory: Any, version: int
) -> None:
    server = server_factory(data_dir=tmp_path / "data", args=["--max-size", "1000"]).start()
    by_length = {**state(version, False), "Upload-Length": "1001"}
    by_body = state(version, False)
    for headers, body in ((by_length, b""), (by_body, b"x" * 1001)):
        reply = send(server, "POST", "/files/", headers, body)
        assert reply.status == 413
        check_ietf_reply(reply, version)
        assert reply.interim == []
        if version >= 6:
            assert "max-size=1000" in reply.headers["upload-limit"]
    listing = json.load(urllib.request.urlopen(f"{server.url}/api/files", timeout=30))
    assert listing["files"] == []


# --- tus-js-client ---------------------------------------------------------------------------

NODE = shutil.which("node")
SCRIPT = INTEROP / "tus_upload.mjs"
HAVE_TUS_JS = (INTEROP / "node_modules" / "tus-js-client" / "package.json").is_file()


@pytest.mark.skipif(
    NODE is None or not SCRIPT.is_file() or not HAVE_TUS_JS,
    reason="node, tests/interop/tus_upload.mjs or tus-js-client is missing",
)
@pytest.mark.parametrize(
    "options",
    [
        {"protocol": "ietf-draft-03", "chunkSize": 3 * 1024 * 1024},
        {"protocol": "ietf-draft-05", "chunkSize": 3 * 1024 * 1024},
        {"protocol": "ietf-draft-05", "uploadDataDuringCreation": True},
        {
            "protocol": "ietf-draft-05",
            "uploadLengthDeferred": True,
            "chunkSize": 3 * 1024 * 1024,
            "source": "stream",
        },
    ],
    ids=["draft-03", "draft-05", "draft-05-one-request", "draft-05-deferred"],
)
def test_tus_js_client(freight_server: Any, tmp_path: Path, options: dict[str, object]) -> None:
    data = os.urandom(8 * 1024 * 1024 + 3)
    path = tmp_path / "upload.bin"
    path.write_bytes(data)
    assert NODE is not None
    result = subprocess.run(
        [NODE, str(SCRIPT), f"{freight_server.url}/files/", str(path), json.dumps(options)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NODE_NO_WARNINGS": "1"},
    )
    assert result.returncode == 0, result.stderr[-5000:]
    url = json.loads(result.stdout.strip().splitlines()[-1])["url"]
    stored, _ = download(freight_server, url.removeprefix(freight_server.url))
    assert hashlib.sha256(stored).digest() == hashlib.sha256(data).digest()


def test_garbage_is_not_taken_for_ietf_without_the_header(freight_server: Any) -> None:
    """Without the interop header the request is tus, which wants Tus-Resumable."""
    reply = send(freight_server, "POST", "/files/", {"Upload-Complete": "?1"})
    assert reply.status == 412
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(f"{freight_server.url}/files/nope", timeout=30)
