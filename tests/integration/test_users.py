"""Users and namespaces: two users and an admin on one real server (HTTP, WebSocket, TCP).

Users and tokens are made with the ``freight user`` command on the server's data directory,
while the server runs: what it changes counts from the server's next request on.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import ServerProcess

from .test_tcp import ERROR, GET, PUT, RESUME, RawClient, TcpServer, parse_error

ADMIN = "admin-secret-token"
MISSING = "A" * 32  # an id no upload has


def freight_cli(data_dir: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "freight", *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@dataclass
class Household:
    server: ServerProcess
    tcp_port: int
    data_dir: Path
    tokens: dict[str, str]

    def new_token(self, name: str, *options: str) -> str:
        return freight_cli(self.data_dir, "user", "token", name, *options)

    def headers(self, who: str, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}", **extra}


@pytest.fixture(scope="module")
def household(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Household]:
    data_dir = tmp_path_factory.mktemp("household") / "data"
    freight_cli(data_dir, "user", "add", "alice")
    freight_cli(data_dir, "user", "add", "bob")
    freight_cli(data_dir, "user", "add", "quota", "--quota", "1000")
    freight_cli(data_dir, "user", "add", "few", "--max-files", "1")
    freight_cli(data_dir, "user", "add", "root", "--admin")
    tokens = {"admin": ADMIN}
    for name in ("alice", "bob", "quota", "few", "root"):
        tokens[name] = freight_cli(data_dir, "user", "token", name)
    tokens["alice-ro"] = freight_cli(data_dir, "user", "token", "alice", "--read-only")
    server = ServerProcess(data_dir, ["--token", ADMIN, "--tcp-port", "0"]).start()
    try:
        yield Household(server, TcpServer(server).port, data_dir, tokens)
    finally:
        server.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


TUS = {"Tus-Resumable": "1.0.0"}


async def tus_create(
    http: aiohttp.ClientSession, home: Household, who: str, length: int, body: bytes = b""
) -> aiohttp.ClientResponse:
    headers = home.headers(who, **TUS, **{"Upload-Length": str(length)})
    if body:
        headers["Content-Type"] = "application/offset+octet-stream"
    async with http.post(f"{home.server.url}/files/", headers=headers, data=body) as resp:
        await resp.read()
        return resp


async def tus_upload(http: aiohttp.ClientSession, home: Household, who: str, data: bytes) -> str:
    """A finished upload of ``data`` by ``who``; returns its id."""
    resp = await tus_create(http, home, who, len(data), data)
    assert resp.status == 201, resp.status
    return resp.headers["Location"].rsplit("/", 1)[1]


async def chunk_create(
    http: aiohttp.ClientSession, home: Household, who: str, size: int
) -> tuple[int, dict[str, Any]]:
    body = {"name": "c.bin", "size": size}
    async with http.post(
        f"{home.server.url}/api/uploads", json=body, headers=home.headers(who)
    ) as resp:
        return resp.status, await resp.json()


async def listed(http: aiohttp.ClientSession, home: Household, who: str, what: str) -> set[str]:
    async with http.get(f"{home.server.url}/api/{what}", headers=home.headers(who)) as resp:
        assert resp.status == 200
        return {item["id"] for item in (await resp.json())[what]}


async def test_each_user_lists_only_their_own_files_and_admins_see_all(
    http: aiohttp.ClientSession, household: Household
) -> None:
    mine = await tus_upload(http, household, "alice", b"alice's file")
    theirs = await tus_upload(http, household, "bob", b"bob's file")
    status, unfinished = await chunk_create(http, household, "bob", 100)
    assert status == 201
    assert mine in await listed(http, household, "alice", "files")
    assert theirs not in await listed(http, household, "alice", "files")
    assert unfinished["id"] not in await listed(http, household, "alice", "uploads")
    assert unfinished["id"] in await listed(http, household, "bob", "uploads")
    for admin in ("admin", "root", "alice-ro"):
        seen = await listed(http, household, admin, "files")
        assert (mine in seen, theirs in seen) == (True, admin != "alice-ro")
    async with http.get(
        f"{household.server.url}/files/{mine}", headers=household.headers("alice")
    ) as resp:
        assert resp.status == 200 and await resp.read() == b"alice's file"


async def test_another_users_upload_answers_404_on_every_http_route(
    http: aiohttp.ClientSession, household: Household
) -> None:
    finished = await tus_upload(http, household, "bob", b"bob's secret")
    status, unfinished = await chunk_create(http, household, "bob", 100)
    assert status == 201
    base = household.server.url
    patch = {**TUS, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"}
    ietf = {"Upload-Draft-Interop-Version": "8"}
    for upload_id in (finished, unfinished["id"], MISSING):
        requests: list[tuple[str, str, dict[str, str], bytes]] = [
            ("GET", f"/files/{upload_id}", {}, b""),
            ("HEAD", f"/files/{upload_id}", {}, b""),
            ("HEAD", f"/files/{upload_id}", TUS, b""),
            ("PATCH", f"/files/{upload_id}", patch, b"x"),
            ("DELETE", f"/files/{upload_id}", TUS, b""),
            ("HEAD", f"/files/{upload_id}", ietf, b""),
            ("DELETE", f"/files/{upload_id}", ietf, b""),
            ("DELETE", f"/api/files/{upload_id}", {}, b""),
            ("POST", f"/api/files/{upload_id}/link", {}, b""),
            ("GET", f"/api/uploads/{upload_id}", {}, b""),
            ("PUT", f"/api/uploads/{upload_id}/chunks/0", {}, b"x" * 100),
            ("POST", f"/api/uploads/{upload_id}/complete", {}, b""),
            ("DELETE", f"/api/uploads/{upload_id}", {}, b""),
        ]
        for method, path, extra, body in requests:
            headers = household.headers("alice", **extra)
            async with http.request(method, base + path, headers=headers, data=body) as resp:
                assert resp.status == 404, (method, path, extra, resp.status)
    # Word for word what an id nobody has gets: no oracle in the message either.
    bodies = []
    for upload_id in (finished, MISSING):
        url = f"{base}/api/uploads/{upload_id}"
        async with http.get(url, headers=household.headers("alice")) as resp:
            bodies.append(await resp.read())
    assert bodies[0] == bodies[1]
    # Nothing was changed: bob still has both.
    assert finished in await listed(http, household, "bob", "files")
    assert unfinished["id"] in await listed(http, household, "bob", "uploads")


async def test_another_users_upload_is_404_over_websocket_and_tcp(
    http: aiohttp.ClientSession, household: Household
) -> None:
    finished = await tus_upload(http, household, "bob", b"bob's ws file")
    resp = await tus_create(http, household, "bob", 10)
    unfinished = resp.headers["Location"].rsplit("/", 1)[1]
    ws_url = f"{household.server.url}/api/ws"
    for upload_id in (unfinished, finished):
        async with http.ws_connect(ws_url) as ws:
            await ws.send_str(
                json.dumps({"op": "resume", "id": upload_id, "token": household.tokens["alice"]})
            )
            reply = json.loads((await ws.receive(timeout=10)).data)
            assert (reply["op"], reply["code"]) == ("error", "ERR_UPLOAD_NOT_FOUND"), reply
    client = RawClient(household.tcp_port)
    try:
        client.hello(household.tokens["alice"].encode())
        client.send(GET, struct.pack(">QQ", 0, 5) + finished.encode())
        assert parse_error(client.expect(ERROR))[0] == "ERR_UPLOAD_NOT_FOUND"
        client.send(RESUME, unfinished.encode())
        assert parse_error(client.expect(ERROR))[0] == "ERR_UPLOAD_NOT_FOUND"
    finally:
        client.close()
    # bob reaches his own over TCP
    client = RawClient(household.tcp_port)
    try:
        client.hello(household.tokens["bob"].encode())
        client.send(GET, struct.pack(">QQ", 0, 5) + finished.encode())
        frame_type, body = client.frame()
        assert frame_type != ERROR, parse_error(body)
    finally:
        client.close()


async def read_until(stream: aiohttp.ClientResponse, wanted: str) -> bytes:
    seen = b""
    deadline = time.monotonic() + 20
    while wanted.encode() not in seen:
        assert time.monotonic() < deadline, seen
        seen += await asyncio.wait_for(stream.content.readany(), 20)
    return seen


async def test_event_streams_show_a_user_only_their_own_uploads(
    http: aiohttp.ClientSession, household: Household
) -> None:
    url = f"{household.server.url}/api/events"
    async with (
        http.get(url, headers=household.headers("alice")) as alice_stream,
        http.get(url, headers=household.headers("admin")) as admin_stream,
    ):
        assert (alice_stream.status, admin_stream.status) == (200, 200)
        theirs = (await tus_create(http, household, "bob", 7)).headers["Location"]
        mine = (await tus_create(http, household, "alice", 7)).headers["Location"]
        theirs_id, mine_id = theirs.rsplit("/", 1)[1], mine.rsplit("/", 1)[1]
        # bob's comes first, so alice's stream would have shown it before her own
        assert theirs_id not in (await read_until(alice_stream, mine_id)).decode()
        await read_until(admin_stream, theirs_id)


async def test_signed_links_work_for_the_owner_only(
    http: aiohttp.ClientSession, household: Household
) -> None:
    base = household.server.url
    mine = await tus_upload(http, household, "alice", b"linked bytes")
    async with http.post(f"{base}/api/files/{mine}/link", headers=household.headers("alice")) as r:
        assert r.status == 200
        link = (await r.json())["url"]
    async with http.get(base + link) as resp:  # no token: the link is enough
        assert resp.status == 200 and await resp.read() == b"linked bytes"
    async with http.post(f"{base}/api/files/{mine}/link", headers=household.headers("bob")) as r:
        assert r.status == 404


async def error_body(resp: aiohttp.ClientResponse) -> dict[str, Any]:
    return dict(json.loads(await resp.read()))


async def test_quota_refusals_in_every_protocol(
    http: aiohttp.ClientSession, household: Household
) -> None:
    base = household.server.url
    # 600 of 1000 bytes declared by an unfinished upload
    assert (await tus_create(http, household, "quota", 600)).status == 201
    headers = household.headers("quota", **TUS, **{"Upload-Length": "500"})
    async with http.post(f"{base}/files/", headers=headers) as resp:
        assert resp.status == 413 and resp.headers["Tus-Resumable"] == "1.0.0"
        refusal = await error_body(resp)
        assert refusal["code"] == "ERR_QUOTA_EXCEEDED" and "quota" in refusal["message"]
    ietf = household.headers(
        "quota",
        **{"Upload-Draft-Interop-Version": "8", "Upload-Complete": "?0", "Upload-Length": "500"},
    )
    async with http.post(f"{base}/files/", headers=ietf) as resp:
        assert resp.status == 413 and resp.headers["Upload-Draft-Interop-Version"] == "8"
        assert b"quota" in await resp.read()
    status, body = await chunk_create(http, household, "quota", 500)
    assert (status, body["code"]) == (413, "ERR_QUOTA_EXCEEDED")
    async with http.ws_connect(f"{base}/api/ws", headers=household.headers("quota")) as ws:
        await ws.send_str(json.dumps({"op": "start", "name": "w.bin", "size": 500}))
        reply = json.loads((await ws.receive(timeout=10)).data)
        assert (reply["op"], reply["code"]) == ("error", "ERR_QUOTA_EXCEEDED"), reply
    client = RawClient(household.tcp_port)
    try:
        client.hello(household.tokens["quota"].encode())
        client.send(PUT, struct.pack(">Q", 500) + bytes(32) + b"t.bin")
        assert parse_error(client.expect(ERROR))[0] == "ERR_QUOTA_EXCEEDED"
    finally:
        client.close()
    # a deferred length would escape the quota until declared: refused for a quota'd user
    deferred = household.headers("quota", **TUS, **{"Upload-Defer-Length": "1"})
    async with http.post(f"{base}/files/", headers=deferred) as resp:
        assert resp.status == 413 and b"declare" in await resp.read()
    # what fits still goes in: 400 more is exactly the quota
    assert (await tus_create(http, household, "quota", 400)).status == 201
    async with http.get(f"{base}/api/me", headers=household.headers("quota")) as resp:
        me = await resp.json()
    assert me["usage"] == {"bytes": 1000, "files": 2}
    assert me["quota"] == {"bytes": 1000, "files": None}


async def test_file_quota_refusals(http: aiohttp.ClientSession, household: Household) -> None:
    assert (await tus_create(http, household, "few", 1)).status == 201
    assert (await tus_create(http, household, "few", 1)).status == 413
    status, body = await chunk_create(http, household, "few", 1)
    assert (status, body["code"]) == (413, "ERR_QUOTA_EXCEEDED")
    assert "files" in body["message"]


async def test_rotation_and_revocation_take_effect_at_once(
    http: aiohttp.ClientSession, household: Household
) -> None:
    url = f"{household.server.url}/api/files"

    async def status(token: str) -> int:
        async with http.get(url, headers={"Authorization": f"Bearer {token}"}) as resp:
            return resp.status

    first = household.new_token("bob")
    assert await status(first) == 200
    finished = await tus_upload(http, household, "bob", b"bob's tcp file")
    connected = RawClient(household.tcp_port)  # a TCP connection opened before the rotation
    connected.hello(first.encode())
    connected.send(GET, struct.pack(">QQ", 0, 0) + finished.encode())
    frame_type, body = connected.frame()
    assert frame_type != ERROR, parse_error(body)
    rotated = household.new_token("bob", "--rotate")
    assert await status(first) == 401
    assert await status(rotated) == 200
    try:  # its next request is refused too
        connected.send(GET, struct.pack(">QQ", 0, 0) + finished.encode())
        assert parse_error(connected.expect(ERROR))[0] == "ERR_UNAUTHORIZED"
    finally:
        connected.close()
    listing = freight_cli(household.data_dir, "user", "token", "bob", "--list")
    assert len(listing.splitlines()) == 1  # every other token of bob's is gone
    token_id = listing.split()[0]
    freight_cli(household.data_dir, "user", "token", "bob", "--revoke", token_id)
    assert await status(rotated) == 401
    short = household.new_token("bob", "--expires", "1s")
    assert await status(short) == 200
    await asyncio.sleep(1.2)
    assert await status(short) == 401
    # the other protocols ask the same store
    client = RawClient(household.tcp_port)
    try:
        client.send(1, b"FRGT" + struct.pack(">H", 1) + rotated.encode())
        assert parse_error(client.expect(ERROR))[0] == "ERR_UNAUTHORIZED"
    finally:
        client.close()
    household.tokens["bob"] = household.new_token("bob")


async def test_read_only_tokens_are_refused_every_write(
    http: aiohttp.ClientSession, household: Household
) -> None:
    base = household.server.url
    mine = await tus_upload(http, household, "alice", b"read me")
    resp = await tus_create(http, household, "alice", 10)
    unfinished = resp.headers["Location"].rsplit("/", 1)[1]
    patch = {**TUS, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"}
    writes: list[tuple[str, str, dict[str, str], Any]] = [
        ("POST", "/files/", {**TUS, "Upload-Length": "5"}, b""),
        ("PATCH", f"/files/{unfinished}", patch, b"x"),
        ("DELETE", f"/files/{mine}", TUS, b""),
        ("DELETE", f"/api/files/{mine}", {}, b""),
        ("POST", "/api/uploads", {"Content-Type": "application/json"}, b'{"size": 5}'),
        ("DELETE", f"/api/uploads/{unfinished}", {}, b""),
    ]
    for method, path, extra, body in writes:
        headers = household.headers("alice-ro", **extra)
        async with http.request(method, base + path, headers=headers, data=body) as resp:
            assert resp.status == 403, (method, path, resp.status)
    async with http.get(f"{base}/files/{mine}", headers=household.headers("alice-ro")) as resp:
        assert resp.status == 200 and await resp.read() == b"read me"
    async with http.ws_connect(f"{base}/api/ws", headers=household.headers("alice-ro")) as ws:
        await ws.send_str(json.dumps({"op": "start", "name": "w.bin", "size": 5}))
        reply = json.loads((await ws.receive(timeout=10)).data)
        assert (reply["op"], reply["code"]) == ("error", "ERR_FORBIDDEN"), reply
    client = RawClient(household.tcp_port)
    try:
        client.hello(household.tokens["alice-ro"].encode())
        client.send(PUT, struct.pack(">Q", 5) + bytes(32) + b"t.bin")
        assert parse_error(client.expect(ERROR))[0] == "ERR_FORBIDDEN"
    finally:
        client.close()
    assert mine in await listed(http, household, "alice", "files")


def test_ls_shows_usage_against_quota(household: Household) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "freight", "ls", household.server.url],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "FREIGHT_TOKEN": household.tokens["quota"]},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "quota: 1000 bytes of 1000 bytes, 2 files"


async def test_a_server_with_users_and_no_token_wants_one(
    http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    open_server = ServerProcess(data_dir).start()
    try:
        async with http.get(f"{open_server.url}/api/files") as resp:
            assert resp.status == 200  # no token, no users: open, as before
        freight_cli(data_dir, "user", "add", "solo")
        async with http.get(f"{open_server.url}/api/files") as resp:
            assert resp.status == 401  # a user exists now: tokens count from here on
        token = freight_cli(data_dir, "user", "token", "solo")
        headers = {"Authorization": f"Bearer {token}"}
        async with http.get(f"{open_server.url}/api/me", headers=headers) as resp:
            assert (await resp.json())["user"] == "solo"
    finally:
        open_server.stop()


async def test_metrics_are_for_admins_only(
    http: aiohttp.ClientSession, household: Household
) -> None:
    url = f"{household.server.url}/metrics"
    for who, status in (("alice", 403), ("root", 200), ("admin", 200)):
        async with http.get(url, headers=household.headers(who)) as resp:
            assert resp.status == status, who


async def test_skip_existing_finds_only_the_caller_s_own_files(
    http: aiohttp.ClientSession, household: Household
) -> None:
    data = os.urandom(4099)
    digest = hashlib.sha256(data).hexdigest()
    await tus_upload(http, household, "alice", data)
    query = f"{household.server.url}/api/files?size={len(data)}&sha256={digest}"
    for who, count in (("alice", 1), ("bob", 0), ("admin", 1)):
        async with http.get(query, headers=household.headers(who)) as resp:
            assert resp.status == 200
            assert len((await resp.json())["files"]) == count, who


async def test_a_revoked_token_ends_its_open_event_stream(
    http: aiohttp.ClientSession, household: Household
) -> None:
    token = household.new_token("bob")
    url = f"{household.server.url}/api/events"
    async with http.get(url, headers={"Authorization": f"Bearer {token}"}) as stream:
        assert stream.status == 200
        await read_until(stream, "snapshot")
        listed = freight_cli(household.data_dir, "user", "token", "bob", "--list")
        token_id = token.split(".")[1]
        assert token_id in listed
        freight_cli(household.data_dir, "user", "token", "bob", "--revoke", token_id)
        await tus_create(http, household, "admin", 5)  # wakes every stream
        ended = time.monotonic() + 20
        while not stream.content.at_eof():
            assert time.monotonic() < ended, "the stream outlived its token"
            await asyncio.wait_for(stream.content.readany(), 20)
