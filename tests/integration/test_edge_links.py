"""A signed link opens one file's bytes and nothing else, whatever its request's headers say;
hostile values on the auth and link path are refused, never a 500."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tus_fixtures import TUS, LiveServer, live_server

from freight.server.links import signature

TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class Linked:
    server: LiveServer
    upload_id: str
    link: str  # absolute URL of the signed link
    query: str
    data: bytes

    async def still_there(self) -> bool:
        url = f"{self.server.url}/files/{self.upload_id}"
        async with self.server.http.get(url, headers=AUTH) as resp:
            return resp.status == 200 and await resp.read() == self.data


@pytest.fixture
async def linked(tmp_path: Path) -> AsyncIterator[Linked]:
    async with live_server(tmp_path / "data", token=TOKEN) as server:
        data = os.urandom(3000)
        url = await server.create(len(data), AUTH)
        assert (await server.patch(url, 0, data, AUTH)).status == 204
        upload_id = url.rsplit("/", 1)[1]
        async with server.http.post(
            f"{server.url}/api/files/{upload_id}/link", headers=AUTH
        ) as resp:
            link = (await resp.json())["url"]
        yield Linked(server, upload_id, f"{server.url}{link}", link.split("?", 1)[1], data)


async def status_of(linked: Linked, method: str, url: str, headers: dict[str, str]) -> int:
    async with linked.server.http.request(method, url, headers=headers) as resp:
        await resp.read()
        return resp.status


@pytest.mark.parametrize(
    ("method", "headers"),
    [
        ("GET", {**TUS, "X-HTTP-Method-Override": "DELETE"}),
        ("HEAD", {**TUS, "X-HTTP-Method-Override": "DELETE"}),
        ("HEAD", {"X-HTTP-Method-Override": "DELETE", "Upload-Draft-Interop-Version": "6"}),
        ("GET", {"X-HTTP-Method-Override": "PATCH", **TUS, "Upload-Offset": "0"}),
    ],
)
async def test_no_header_turns_a_link_into_a_delete(
    linked: Linked, method: str, headers: dict[str, str]
) -> None:
    status = await status_of(linked, method, linked.link, headers)
    assert status in (200, 401), status  # the bytes (the override is ignored), or refused
    assert await linked.still_there()


@pytest.mark.parametrize(
    ("method", "headers"),
    [
        ("POST", {**TUS, "X-HTTP-Method-Override": "DELETE"}),
        ("POST", {**TUS, "X-HTTP-Method-Override": "GET"}),
        ("DELETE", TUS),
        (
            "PATCH",
            {**TUS, "Upload-Offset": "3000", "Content-Type": "application/offset+octet-stream"},
        ),
        ("HEAD", TUS),  # a tus HEAD reports upload state, not the file's bytes
        ("HEAD", {"Upload-Draft-Interop-Version": "6"}),  # an IETF offset retrieval
        ("OPTIONS", TUS),
    ],
)
async def test_a_link_opens_only_downloads(
    linked: Linked, method: str, headers: dict[str, str]
) -> None:
    # 400: an override naming GET is refused before the token is looked at.
    assert await status_of(linked, method, linked.link, headers) in (400, 401)
    assert await linked.still_there()


async def test_a_link_opens_plain_get_and_head(linked: Linked) -> None:
    async with linked.server.http.get(linked.link) as resp:
        assert resp.status == 200 and await resp.read() == linked.data
    async with linked.server.http.head(linked.link) as resp:
        assert resp.status == 200 and resp.headers["Content-Length"] == str(len(linked.data))


@pytest.mark.parametrize(
    "path",
    [
        "/api/uploads/{id}",  # the chunk API's status of the same id
        "/api/uploads",
        "/api/files",
        "/api/events",
        "/metrics",
        "/api/openapi.json",
    ],
)
async def test_a_link_opens_no_api_route(linked: Linked, path: str) -> None:
    url = f"{linked.server.url}{path.format(id=linked.upload_id)}?{linked.query}"
    assert await status_of(linked, "GET", url, {}) == 401


async def test_the_override_is_honoured_on_post_only(tmp_path: Path) -> None:
    async with live_server(tmp_path / "data") as server:
        url = await server.create(5)
        assert (await server.patch(url, 0, b"hello")).status == 204
        for method in ("GET", "HEAD", "PATCH", "OPTIONS"):
            headers = {**TUS, "X-HTTP-Method-Override": "DELETE"}
            async with server.http.request(method, url, headers=headers) as resp:
                assert resp.status < 500
        assert await server.offset(url) == 5  # still there
        headers = {**TUS, "X-HTTP-Method-Override": "HEAD"}
        async with server.http.post(url, headers=headers) as resp:
            assert resp.status == 400
            assert resp.headers["Tus-Resumable"] == "1.0.0"
            assert (await resp.json())["code"] == "ERR_INVALID_HEADER"
        headers = {**TUS, "X-HTTP-Method-Override": "delete"}
        async with server.http.post(url, headers=headers) as resp:
            assert resp.status == 204  # what tus meant it for still works
        assert (await server.head(url)).status == 404


# --- hostile values on the auth and link path ------------------------------------------------


async def raw_request(url: str, head: bytes) -> tuple[int, bytes]:
    """Send ``head`` (request line and headers, any bytes) and read the whole answer."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(head + b"Connection: close\r\n\r\n")
        await writer.drain()
        async with asyncio.timeout(10):
            answer = await reader.read()
    finally:
        writer.close()
    status = int(answer.split(b" ", 2)[1])
    return status, answer


HOSTILE_HEADERS = [
    b"Authorization: Bearer \xff\xfe\xfd\r\n",
    b"Authorization: \xc3\x28\r\n",
    b"Authorization: Bearer s3cret\xed\xa0\x80\r\n",
    b"Authorization: Bearer \xe2\x82\xac\r\n",
    b"Origin: \xff\xfe://\x80\r\n",
    b"Origin: http://[::1\r\n",
    b"Origin: http://example.test:99999999\r\n",
]


@pytest.mark.parametrize("header", HOSTILE_HEADERS)
async def test_hostile_auth_headers_are_refused_quietly(
    linked: Linked, header: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    head = b"GET /api/files HTTP/1.1\r\nHost: 127.0.0.1\r\n" + header
    status, answer = await raw_request(linked.server.url, head)
    assert status == 401, answer
    assert b'"ERR_UNAUTHORIZED"' in answer
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize(
    "query",
    [
        "expires={far}&sig=%FF%FE",
        "expires={far}&sig=" + "%C3%A9" * 32,
        "expires=" + "9" * 5000 + "&sig=" + "0" * 64,
        "expires=" + "0" * 5000 + "1&sig=" + "0" * 64,
        "expires=%C2%B2&sig=" + "0" * 64,  # a superscript two: str.isdigit() says yes
        "expires=%D9%A1%D9%A2&sig=" + "0" * 64,  # Arabic-Indic digits
        "expires=-1&sig=" + "0" * 64,
        "expires={far}&sig={good}&sig=x",
        "expires=%FF&sig=%00",
    ],
)
async def test_hostile_link_queries_are_no_link(
    linked: Linked, query: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    far = int(time.time()) + 600
    good = signature(TOKEN, linked.upload_id, far)
    target = f"/files/{linked.upload_id}?{query.format(far=far, good=good)}"
    status, answer = await raw_request(
        linked.server.url, f"GET {target} HTTP/1.1\r\nHost: x\r\n".encode()
    )
    if "{good}" in query:
        assert status == 200  # the first sig counts; the extra one changes nothing
    else:
        assert status == 401, answer
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize("path", [b"/files/%FF%FE", b"/files/\xff\xfe", b"/files/a%00b"])
async def test_hostile_ids_under_a_link_are_no_link(linked: Linked, path: bytes) -> None:
    far = int(time.time()) + 600
    query = f"?expires={far}&sig={'0' * 64}".encode()
    status, answer = await raw_request(
        linked.server.url, b"GET " + path + query + b" HTTP/1.1\r\nHost: x\r\n"
    )
    assert status in (400, 401, 404), answer
