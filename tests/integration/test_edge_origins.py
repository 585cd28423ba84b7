"""Which web pages may use the server: its own, and the origins the operator lists.

A page on another origin must not list, read or delete files of a server without a token,
over HTTP or the WebSocket endpoint (one policy); with a token, the token is the check.
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from tus_fixtures import TUS, LiveServer, live_server

from freight.server.origins import OriginPolicy, parse_origin

EVIL = "https://evil.example"
APP = "https://app.example"
OCTETS = "application/offset+octet-stream"


async def upload(server: LiveServer, data: bytes, headers: dict[str, str] | None = None) -> str:
    url = await server.create(len(data), headers)
    assert (await server.patch(url, 0, data, headers)).status == 204
    return url


@pytest.fixture
async def open_server(tmp_path: Path) -> AsyncIterator[LiveServer]:
    """No token (the `make serve` default), one listed origin."""
    async with live_server(tmp_path / "data", cors_origins=(APP,)) as server:
        yield server


async def answer(
    server: LiveServer, method: str, path: str, headers: dict[str, str]
) -> aiohttp.ClientResponse:
    async with server.http.request(method, f"{server.url}{path}", headers=headers) as resp:
        await resp.read()
        return resp


READS_AND_WRITES = [
    ("GET", "/api/files", {}),
    ("GET", "/files/{id}", {}),
    ("HEAD", "/files/{id}", {}),
    ("GET", "/api/uploads", {}),
    ("GET", "/api/uploads/{id}", {}),
    ("GET", "/api/events", {}),
    ("GET", "/metrics", {}),
    ("GET", "/api/openapi.json", {}),
    ("DELETE", "/api/files/{id}", {}),
    ("DELETE", "/files/{id}", TUS),
    ("POST", "/files/{id}", {**TUS, "X-HTTP-Method-Override": "DELETE"}),
    ("POST", "/files/", {**TUS, "Upload-Length": "5"}),
    ("POST", "/api/files/{id}/link", {}),
    ("POST", "/api/uploads", {"Content-Type": "application/json"}),
]


@pytest.mark.parametrize(("method", "path", "headers"), READS_AND_WRITES)
async def test_a_foreign_page_can_neither_read_nor_write(
    open_server: LiveServer, method: str, path: str, headers: dict[str, str]
) -> None:
    url = await upload(open_server, b"hello")
    upload_id = url.rsplit("/", 1)[1]
    resp = await answer(open_server, method, path.format(id=upload_id), {**headers, "Origin": EVIL})
    assert resp.status == 403
    assert "Access-Control-Allow-Origin" not in resp.headers
    assert await open_server.offset(url) == 5  # nothing was deleted


async def test_refusals_are_in_the_protocols_own_form(open_server: LiveServer) -> None:
    tus = await answer(open_server, "POST", "/files/", {**TUS, "Origin": EVIL})
    assert tus.status == 403 and tus.headers["Tus-Resumable"] == "1.0.0"
    ietf = {"Upload-Draft-Interop-Version": "6", "Origin": EVIL}
    resp = await answer(open_server, "HEAD", "/files/x", ietf)
    assert resp.status == 403 and resp.headers["Upload-Draft-Interop-Version"] == "6"
    async with open_server.http.get(
        f"{open_server.url}/api/files", headers={"Origin": EVIL}
    ) as json_resp:
        assert (await json_resp.json())["code"] == "ERR_FORBIDDEN"


@pytest.mark.parametrize("origin", [EVIL, "null", "http://127.0.0.1", "garbage", ""])
async def test_foreign_preflights_get_no_cors_headers(open_server: LiveServer, origin: str) -> None:
    headers = {
        "Origin": origin,
        "Access-Control-Request-Method": "DELETE",
        "Access-Control-Request-Private-Network": "true",
    }
    resp = await answer(open_server, "OPTIONS", "/api/files/x", headers)
    assert resp.status == 403
    assert not [h for h in resp.headers if h.lower().startswith("access-control-")]


async def test_the_servers_own_page_and_listed_origins_work(open_server: LiveServer) -> None:
    own = open_server.url
    forwarded = {"Origin": own.replace("http://", "https://"), "X-Forwarded-Proto": "https"}
    for headers in ({"Origin": own}, {"Origin": APP}, forwarded, {}):
        resp = await answer(open_server, "GET", "/api/files", headers)
        assert resp.status == 200, headers
        if "Origin" in headers:
            assert resp.headers["Access-Control-Allow-Origin"] == headers["Origin"]
    preflight = {"Origin": APP, "Access-Control-Request-Method": "PATCH"}
    resp = await answer(open_server, "OPTIONS", "/files/x", preflight)
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Origin"] == APP
    assert "upload-offset" in resp.headers["Access-Control-Allow-Headers"].lower()
    assert "Access-Control-Allow-Private-Network" not in resp.headers  # not asked for


async def test_the_page_and_health_stay_open(open_server: LiveServer) -> None:
    for path in ("/", "/health"):
        assert (await answer(open_server, "GET", path, {"Origin": EVIL})).status == 200


async def test_private_network_access_only_for_listed_origins(tmp_path: Path) -> None:
    asks = {
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Private-Network": "true",
    }
    async with live_server(tmp_path / "a", cors_origins=(APP,), token="t") as server:
        listed = await answer(server, "OPTIONS", "/api/files", {**asks, "Origin": APP})
        assert listed.headers["Access-Control-Allow-Private-Network"] == "true"
        # With a token any origin may present it, but reaching into a private network is
        # granted to listed origins only.
        other = await answer(server, "OPTIONS", "/api/files", {**asks, "Origin": EVIL})
        assert other.status == 204
        assert "Access-Control-Allow-Private-Network" not in other.headers
    async with live_server(tmp_path / "b", cors_origins=("*",)) as server:
        anyone = await answer(server, "OPTIONS", "/api/files", {**asks, "Origin": EVIL})
        assert anyone.headers["Access-Control-Allow-Private-Network"] == "true"
        assert (await answer(server, "GET", "/api/files", {"Origin": EVIL})).status == 200


async def test_with_a_token_the_token_is_the_check(tmp_path: Path) -> None:
    async with live_server(tmp_path / "data", token="t") as server:
        auth = {"Authorization": "Bearer t"}
        assert (await answer(server, "GET", "/api/files", {"Origin": EVIL})).status == 401
        resp = await answer(server, "GET", "/api/files", {**auth, "Origin": EVIL})
        assert resp.status == 200 and resp.headers["Access-Control-Allow-Origin"] == EVIL


async def ws_status(server: LiveServer, origin: str) -> int:
    url = f"{server.url}/api/ws".replace("http://", "ws://")
    try:
        async with server.http.ws_connect(url, headers={"Origin": origin}):
            return 101
    except aiohttp.WSServerHandshakeError as exc:
        return exc.status


async def test_the_websocket_endpoint_follows_the_same_policy(open_server: LiveServer) -> None:
    assert await ws_status(open_server, EVIL) == 403
    assert await ws_status(open_server, APP) == 101
    assert await ws_status(open_server, open_server.url) == 101


def test_origins_are_normalised() -> None:
    policy = OriginPolicy.build(["HTTPS://App.Example:443", "http://10.0.0.2:8080"], token=False)
    assert policy.is_listed("https://app.example")
    assert policy.is_listed("http://10.0.0.2:8080")
    assert not policy.is_listed("http://app.example")
    assert not policy.is_listed("https://app.example.evil.example")
    assert not policy.is_listed("null")
    for bad in ("app.example", "https://", "https://a/b", "*.example", "https://a:x"):
        with pytest.raises(ValueError):
            parse_origin(bad)


def test_the_cli_refuses_what_is_not_an_origin() -> None:
    bad = subprocess.run(
        [sys.executable, "-m", "freight", "serve", "--cors-origin", "not an origin"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "--cors-origin" in bad.stderr


def test_a_served_cli_takes_origins_from_the_environment(tmp_path: Path) -> None:
    env = {**os.environ, "FREIGHT_CORS_ORIGIN": f"{APP}, http://b.example:81"}
    command = [sys.executable, "-m", "freight", "serve", "--port", "0"]
    command += ["--data-dir", str(tmp_path / "data")]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env) as process:
        try:
            assert process.stdout is not None
            url = process.stdout.readline().split()[3]
            statuses = {
                origin: _status(f"{url}/api/files", origin)
                for origin in (APP, "http://b.example:81", "http://c.example", EVIL)
            }
        finally:
            process.terminate()
    assert statuses == {APP: 200, "http://b.example:81": 200, "http://c.example": 403, EVIL: 403}


def _status(url: str, origin: str) -> int:
    request = urllib.request.Request(url, headers={"Origin": origin})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
