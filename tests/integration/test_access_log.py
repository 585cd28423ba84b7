"""What a running ``freight serve`` writes to its log: one access line per request (text or
JSON), one line per upload finished, expired or deleted, secrets masked, and the client's
address from X-Forwarded-For only when a trusted proxy sent it."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import ServerProcess

from .helpers import MiB, PatternStream, download, request

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TUS = {"Tus-Resumable": "1.0.0"}
_PAIR = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')


def text_fields(line: str) -> dict[str, Any]:
    """The ``key=value`` fields of a text log line (quoted values are JSON strings)."""
    fields: dict[str, Any] = {}
    for key, value in _PAIR.findall(line.split(": ", 1)[1]):
        fields[key] = json.loads(value) if value.startswith('"') else value
    return fields


def wait_for_line(server: ServerProcess, wanted: Callable[[str], bool], timeout: float = 15) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in list(server.output_tail):
            if wanted(line):
                return line
        time.sleep(0.05)
    raise AssertionError("no such log line in:\n" + "".join(server.output_tail))


def access_line(server: ServerProcess, method: str, status: int, path: str) -> dict[str, Any]:
    line = wait_for_line(
        server,
        lambda ln: (
            "freight.access" in ln
            and f"method={method} " in ln
            and f"status={status} " in ln
            and path in ln
        ),
    )
    return text_fields(line)


def json_lines(server: ServerProcess) -> list[dict[str, Any]]:
    entries = []
    for line in list(server.output_tail):
        if line.startswith("{"):
            entries.append(json.loads(line))
    return entries


def wait_for_entry(server: ServerProcess, **wanted: object) -> dict[str, Any]:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        for entry in json_lines(server):
            if all(entry.get(k) == v for k, v in wanted.items()):
                return entry
        time.sleep(0.05)
    raise AssertionError(f"no entry with {wanted} in:\n" + "".join(server.output_tail))


def create(url: str, length: int, headers: dict[str, str]) -> str:
    reply = request("POST", f"{url}/files/", {**TUS, **headers, "Upload-Length": str(length)})
    assert reply.status == 201, reply
    location = reply.header("Location")
    assert location
    return location.rsplit("/", 1)[1]


def patch(url: str, upload_id: str, body: bytes, headers: dict[str, str]) -> None:
    reply = request(
        "PATCH",
        f"{url}/files/{upload_id}",
        {
            **TUS,
            **headers,
            "Upload-Offset": "0",
            "Content-Type": "application/offset+octet-stream",
        },
        body,
    )
    assert reply.status == 204, reply


def test_text_lines_for_uploads_401_404_and_delete(
    tmp_path: Path, server_factory: type[ServerProcess]
) -> None:
    server = server_factory(tmp_path / "data", ["--token", TOKEN]).start()
    # A small body goes through aiohttp's parser; a large one is taken off the socket
    # directly (spliced), where aiohttp counts nothing.
    small = os.urandom(1000)
    small_id = create(server.url, len(small), AUTH)
    created = access_line(server, "POST", 201, "/files/")
    assert created["upload_id"] == small_id and created["client"] == "127.0.0.1"
    patch(server.url, small_id, small, AUTH)
    line = access_line(server, "PATCH", 204, small_id)
    assert line["bytes_in"] == "1000" and line["upload_id"] == small_id
    assert float(line["duration"]) < 30 and int(line["bytes_out"]) > 0

    big = PatternStream(5 * MiB + 17)
    big_id = create(server.url, big.size, AUTH)
    patch(server.url, big_id, b"".join(big.chunks()), AUTH)
    line = access_line(server, "PATCH", 204, big_id)
    assert line["bytes_in"] == str(big.size) and line["upload_id"] == big_id

    finished = wait_for_line(server, lambda ln: "upload finished" in ln and big_id in ln)
    fields = text_fields(finished)
    assert fields["size"] == str(big.size) and fields["sha256"] == big.sha256()
    assert " INFO freight.core.engine: upload finished " in finished

    request("GET", f"{server.url}/files/{small_id}")
    unauthorized = access_line(server, "GET", 401, small_id)
    assert unauthorized["bytes_in"] == "0"
    request("GET", f"{server.url}/files/no-such-upload", AUTH)
    assert access_line(server, "GET", 404, "/files/no-such-upload")["upload_id"]

    assert request("DELETE", f"{server.url}/files/{small_id}", {**TUS, **AUTH}).status == 204
    deleted = text_fields(wait_for_line(server, lambda ln: "upload deleted" in ln))
    assert deleted == {"upload_id": small_id, "size": "1000"}
    # Every log line is one line: each starts with a timestamp, none is a traceback.
    logged = [ln for ln in server.output_tail if "listening on" not in ln]
    assert all(re.match(r"\d{4}-\d\d-\d\dT", ln) for ln in logged), logged
    assert TOKEN not in "".join(server.output_tail)


def test_json_lines_and_a_signed_link_with_its_signature_masked(
    tmp_path: Path, server_factory: type[ServerProcess]
) -> None:
    server = server_factory(tmp_path / "data", ["--token", TOKEN, "--log-format", "json"]).start()
    data = os.urandom(300_000)
    upload_id = create(server.url, len(data), AUTH)
    patch(server.url, upload_id, data, AUTH)
    entry = wait_for_entry(server, logger="freight.access", method="PATCH")
    assert entry["bytes_in"] == len(data) and entry["upload_id"] == upload_id
    assert entry["status"] == 204 and entry["level"] == "info" and entry["message"] == "request"
    assert entry["client"] == "127.0.0.1" and isinstance(entry["duration"], float)
    finished = wait_for_entry(server, message="upload finished")
    assert finished["upload_id"] == upload_id and finished["size"] == len(data)

    reply = request("POST", f"{server.url}/api/files/{upload_id}/link", AUTH)
    assert reply.status == 200
    link = json.loads(reply.body)["url"]
    signature = re.search(r"sig=([0-9a-f]+)", link)
    assert signature
    got = download(f"{server.url}{link}")
    assert got.status == 200 and got.size == len(data)
    entry = wait_for_entry(server, logger="freight.access", method="GET", status=200)
    assert entry["path"].startswith(f"/files/{upload_id}?expires=")
    assert entry["path"].endswith("&sig=***")
    # sendfile's bytes count too: the whole body and the response head.
    assert len(data) < entry["bytes_out"] < len(data) + 2048
    assert signature.group(1) not in "".join(server.output_tail)

    request("GET", f"{server.url}/files/{upload_id}")
    assert wait_for_entry(server, logger="freight.access", status=401)["bytes_out"] > 0


def test_forwarded_for_is_believed_only_from_a_trusted_proxy(
    tmp_path: Path, server_factory: type[ServerProcess]
) -> None:
    forwarded = {"X-Forwarded-For": "203.0.113.9, 127.0.0.3"}
    trusting = server_factory(tmp_path / "a", ["--trusted-proxy", "127.0.0.0/8"]).start()
    request("GET", f"{trusting.url}/files/none", forwarded)
    assert access_line(trusting, "GET", 404, "/files/none")["client"] == "203.0.113.9"

    other = server_factory(tmp_path / "b", ["--trusted-proxy", "10.0.0.0/8"]).start()
    request("GET", f"{other.url}/files/none", forwarded)
    assert access_line(other, "GET", 404, "/files/none")["client"] == "127.0.0.1"

    default = server_factory(tmp_path / "c").start()
    request("GET", f"{default.url}/files/none", forwarded)
    assert access_line(default, "GET", 404, "/files/none")["client"] == "127.0.0.1"


def test_an_expired_upload_is_one_line_and_warning_level_hides_requests(
    tmp_path: Path, server_factory: type[ServerProcess]
) -> None:
    args = ["--expire-unstarted", "0.2", "--sweep-interval", "0.2", "--log-format", "json"]
    server = server_factory(tmp_path / "data", args).start()
    upload_id = create(server.url, 100, {})
    entry = wait_for_entry(server, message="upload expired")
    assert entry["upload_id"] == upload_id and entry["size"] == 100 and entry["received"] == 0
    assert entry["logger"] == "freight.core.engine"

    quiet = server_factory(tmp_path / "quiet", ["--log-level", "warning"]).start()
    create(quiet.url, 100, {})
    request("GET", f"{quiet.url}/files/none")
    time.sleep(0.5)
    assert [ln for ln in quiet.output_tail if "listening on" not in ln] == []
