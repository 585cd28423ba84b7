"""Hooks over a real webhook receiver (tests/hooks/receiver.py), freight in this process."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import aiohttp

from freight.server.hooks.signing import sign, verify
from tests.hooks.conftest import LiveApp
from tests.hooks.receiver import SECRET, Receiver

TUS = {"Tus-Resumable": "1.0.0"}


def tus_metadata(filename: str) -> str:
    return f"filename {base64.b64encode(filename.encode()).decode()}"


async def tus_create(app: LiveApp, filename: str, size: int) -> aiohttp.ClientResponse:
    headers = {**TUS, "Upload-Length": str(size), "Upload-Metadata": tus_metadata(filename)}
    headers["User-Agent"] = "hook-test/1"
    async with app.http.post(f"{app.url}/files/", headers=headers) as response:
        await response.read()
        return response


async def tus_upload(app: LiveApp, filename: str, data: bytes) -> tuple[str, int, str]:
    """Create and send ``data`` in one PATCH; the upload URL, the PATCH status and body."""
    created = await tus_create(app, filename, len(data))
    assert created.status == 201, created.status
    url = (
        f"{app.url}{created.headers['Location']}"
        if created.headers["Location"].startswith("/")
        else created.headers["Location"]
    )
    headers = {**TUS, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"}
    async with app.http.patch(url, data=data, headers=headers) as response:
        return url, response.status, await response.text()


async def test_pre_create_refuses_by_metadata_in_tus_chunks_and_websocket(
    receiver: Receiver, start_app: Any
) -> None:
    app = await start_app(hook_url=receiver.url)
    refused = await tus_create(app, "setup.exe", 10)
    assert refused.status == 403
    async with app.http.post(f"{app.url}/api/uploads", json={"name": "x.exe", "size": 10}) as r:
        assert r.status == 403
        body = await r.json()
        assert body["code"] == "ERR_HOOK_REJECTED"
        assert body["message"] == "no executables here"
    async with app.http.ws_connect(f"{app.url}/api/ws") as ws:
        await ws.send_str(json.dumps({"op": "start", "name": "y.exe", "size": 10}))
        reply = json.loads((await ws.receive(timeout=10)).data)
        assert reply["op"] == "error" and reply["code"] == "ERR_HOOK_REJECTED", reply
    assert await app.engine.sessions.list_all() == []  # nothing stored for any of them
    # Allowed: created with the receiver's metadata, and the request described.
    allowed = await tus_create(app, "notes.txt", 10)
    assert allowed.status == 201
    sessions = await app.engine.sessions.list_all()
    assert [s.metadata for s in sessions] == [{"filename": "notes.txt", "checked-by": "receiver"}]
    asked = receiver.events("pre-create")[-1].body
    assert asked["request"]["remote"] == "127.0.0.1"
    assert asked["request"]["headers"]["User-Agent"] == "hook-test/1"
    assert "Authorization" not in asked["request"]["headers"]
    assert asked["upload"]["metadata"] == {"filename": "notes.txt"} and asked["user"] is None


async def test_pre_finish_refusal_publishes_nothing(receiver: Receiver, start_app: Any) -> None:
    app = await start_app(hook_url=receiver.url)
    url, status, text = await tus_upload(app, "virus.bin", b"x" * 1000)
    assert status == 422 and "infected" in text
    async with app.http.head(url, headers=TUS) as head:
        assert head.status == 404  # terminated: its bytes are gone
    async with app.http.get(url) as download:
        assert download.status == 404
    terminated = await asyncio.to_thread(receiver.wait_for, "post-terminate", 1, 20)
    assert terminated[0].body["reason"] == "pre-finish: infected"
    assert receiver.events("post-finish") == []


async def test_post_finish_is_delivered_once_per_upload(receiver: Receiver, start_app: Any) -> None:
    app = await start_app(hook_url=receiver.url)
    ids = []
    for n in range(5):
        url, status, _ = await tus_upload(app, f"file{n}.txt", f"content {n}".encode() * 100)
        assert status == 204
        ids.append(url.rsplit("/", 1)[1])
    await asyncio.to_thread(receiver.wait_for, "post-finish", 5, 20)
    await asyncio.sleep(2.5)  # past the worker's next looks at the outbox: nothing more comes
    finished = receiver.events("post-finish")
    assert sorted(r.body["upload"]["id"] for r in finished) == sorted(ids)
    for got in finished:
        upload = got.body["upload"]
        assert got.key == got.body["idempotency_key"] == f"post-finish:{upload['id']}"
        assert upload["state"] == "finished" and len(upload["digest"]["sha-256"]) == 64
        assert got.signed and got.headers["Freight-Hook-Attempt"] == "1"
    async with app.http.get(f"{app.url}/metrics") as response:
        metrics = await response.text()
    assert "freight_hook_outbox_depth 0.0" in metrics
    assert 'freight_hook_deliveries_total{event="post-finish",target="webhook"} 5.0' in metrics


async def test_a_failing_hook_refuses_by_default_and_lets_through_when_open(
    receiver: Receiver, start_app: Any
) -> None:
    receiver.stop()  # nobody listens there now
    closed = await start_app(hook_url=receiver.url, hook_timeout=2.0)
    assert (await tus_create(closed, "a.txt", 10)).status == 503
    opened = await start_app(hook_url=receiver.url, hook_timeout=2.0, hook_fail_open=True)
    assert (await tus_create(opened, "a.txt", 10)).status == 201


async def test_a_wrong_secret_is_refused_by_the_receiver(
    receiver: Receiver, start_app: Any
) -> None:
    app = await start_app(hook_url=receiver.url, hook_secret="not-the-shared-one")
    # The receiver answers 401 to a bad signature: a failed hook, refused (fail closed).
    assert (await tus_create(app, "a.txt", 10)).status == 503
    assert receiver.received == []


def test_signatures_verify_and_catch_tampering() -> None:
    body = b'{"event":"post-finish"}'
    now = int(time.time())
    signature = sign(SECRET, now, body)
    assert signature.startswith("v1=") and len(signature) == 3 + 64
    assert verify(SECRET, str(now), signature, body, now=now, tolerance=300)
    assert not verify("other", str(now), signature, body, now=now, tolerance=300)
    assert not verify(SECRET, str(now), signature, body + b" ", now=now, tolerance=300)
    assert not verify(SECRET, str(now + 1), signature, body, now=now, tolerance=300)
    assert not verify(SECRET, str(now), signature, body, now=now + 301, tolerance=300)
    assert not verify(SECRET, "soon", signature, body, now=now, tolerance=300)


async def test_pre_finish_refusal_in_the_chunk_api(receiver: Receiver, start_app: Any) -> None:
    app = await start_app(hook_url=receiver.url)
    data = b"v" * 100
    async with app.http.post(
        f"{app.url}/api/uploads", json={"name": "virus.txt", "size": len(data)}
    ) as created:
        assert created.status == 201
        upload_id = (await created.json())["id"]
    async with app.http.put(f"{app.url}/api/uploads/{upload_id}/chunks/0", data=data) as put:
        assert put.status == 200, await put.text()
    async with app.http.post(f"{app.url}/api/uploads/{upload_id}/complete", json={}) as done:
        assert done.status == 422
        body = await done.json()
        assert body["code"] == "ERR_HOOK_REJECTED" and body["message"] == "infected"
    async with app.http.get(f"{app.url}/api/uploads/{upload_id}") as status:
        assert status.status == 404
    async with app.http.get(f"{app.url}/files/{upload_id}") as download:
        assert download.status == 404
