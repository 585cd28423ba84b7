"""The request head limits are one set (docs/limits.md): each is reachable, each is
enforced, and a request just over one costs a clear refusal, never a traceback."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import request
from slow_peers import Served, serve

from freight.protocol.metadata import MAX_METADATA_LENGTH
from freight.protocol.tus import MAX_CONCAT_PARTS
from freight.server.connections import (
    MAX_HEADER_FIELD,
    MAX_HEADERS,
    MAX_REQUEST_HEAD,
    MAX_REQUEST_LINE,
)

TUS = {"Tus-Resumable": "1.0.0"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serve(tmp_path_factory.mktemp("limits")) as served:
        yield served
    assert "Traceback" not in served.log_text()


def _code(body: bytes) -> str:
    return str(json.loads(body).get("code"))


def test_upload_metadata_of_64_kib_is_read_and_one_more_byte_is_refused(server: Served) -> None:
    encoded = "A" * (MAX_METADATA_LENGTH - 4)  # valid base64: a multiple of 4 characters
    value = "abc " + encoded
    assert len(value) == MAX_METADATA_LENGTH
    headers = {**TUS, "Upload-Length": "1"}
    ok = request("POST", f"{server.url}/files/", {**headers, "Upload-Metadata": value})
    assert ok.status == 201, (ok.status, ok.body)
    over = request("POST", f"{server.url}/files/", {**headers, "Upload-Metadata": "x" + value})
    assert over.status == 400 and _code(over.body) == "ERR_INVALID_HEADER", over.body
    assert b"longer than" in over.body


def test_upload_concat_of_1000_parts_is_read_and_1001_are_refused(server: Served) -> None:
    def concat(parts: int) -> str:
        # Absolute URLs, as long as clients send them: well over aiohttp's 8,190-byte default.
        url = f"{server.url}/files/" + "a" * 32
        return "final;" + " ".join([url] * parts)

    at_limit = request(
        "POST", f"{server.url}/files/", {**TUS, "Upload-Concat": concat(MAX_CONCAT_PARTS)}
    )
    # The header is read: the parts are looked up (and do not exist), not cut off by the parser.
    assert at_limit.status in (400, 404), at_limit.body
    assert _code(at_limit.body) != "ERR_CONCATENATION" or b"more than" not in at_limit.body
    over = request(
        "POST", f"{server.url}/files/", {**TUS, "Upload-Concat": concat(MAX_CONCAT_PARTS + 1)}
    )
    assert over.status == 400 and _code(over.body) == "ERR_CONCATENATION", over.body
    assert b"more than" in over.body


def _status(port: int, head: bytes) -> int | None:
    """The status of the answer to ``head``, or None if the server only closed."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            sock.sendall(head)
            answer = sock.recv(64)
        except ConnectionError:
            return None
    if not answer:
        return None
    return int(answer.split(b" ", 2)[1])


def _head(target: str = "/health", headers: list[tuple[str, str]] | None = None) -> bytes:
    lines = [f"GET {target} HTTP/1.1", "Host: x", *[f"{n}: {v}" for n, v in headers or []]]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_one_header_line_of_128_kib_is_read_and_a_longer_value_is_refused(server: Served) -> None:
    name = "X-Pad"
    # A whole "name: value" line of the limit passes either aiohttp parser; the C parser
    # checks the name and the value each against the limit, the Python one the line.
    value = "p" * (MAX_HEADER_FIELD - len(name) - 2)
    assert _status(server.port, _head(headers=[(name, value)])) == 200
    over = "p" * (MAX_HEADER_FIELD + 1)
    assert _status(server.port, _head(headers=[(name, over)])) in (400, 431, None)


def test_the_request_line_limit(server: Served) -> None:
    # The limit is on the request target; aiohttp's pure-Python parser counts the whole line.
    fixed = len("GET  HTTP/1.1")
    target = "/health?" + "q" * (MAX_REQUEST_LINE - fixed - len("/health?"))
    assert _status(server.port, _head(target)) == 200
    over = "/health?" + "q" * (MAX_REQUEST_LINE + 1 - len("/health?"))
    assert _status(server.port, _head(over)) in (400, 414, None)


def test_the_header_count_limit(server: Served) -> None:
    headers = [(f"X-H{i}", "v") for i in range(MAX_HEADERS - 1)]  # Host is one of them
    assert _status(server.port, _head(headers=headers)) == 200
    assert _status(server.port, _head(headers=[*headers, ("X-One-More", "v")])) in (400, None)


def test_the_whole_head_limit(server: Served) -> None:
    field = MAX_HEADER_FIELD // 2
    under = [(f"X-P{i}", "p" * field) for i in range(MAX_REQUEST_HEAD // field - 1)]
    assert _status(server.port, _head(headers=under)) == 200
    over = [(f"X-P{i}", "p" * field) for i in range(MAX_REQUEST_HEAD // field + 1)]
    assert _status(server.port, _head(headers=over)) in (431, None)


def test_malformed_requests_cost_at_most_their_access_line(tmp_path: Path) -> None:
    """A bad request is one access-log line like any other (operators expect to see 400s),
    never a traceback or an error line an attacker could multiply."""
    with serve(tmp_path) as served:
        before = len(served.log_text().splitlines())
        sent = 0
        for head in (b"GARBAGE\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n", b"\x16\x03\x01\x00\xa5\x01"):
            for _ in range(20):
                _status(served.port, head)
                sent += 1
        bad_length = b"POST /files/ HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n"
        for _ in range(20):
            assert _status(served.port, bad_length) in (400, None)
            sent += 1
        assert request("GET", f"{served.url}/health").status == 200
        added = served.log_text().splitlines()[before:]
        assert len(added) <= sent + 1, "\n".join(added)
        noisy = [line for line in added if "Traceback" in line or " ERROR " in line]
        assert not noisy, "\n".join(noisy)
