"""``GET /api/events``: a snapshot, then live events of every protocol's uploads, keepalives,
and streams that end cleanly when the client leaves or the server shuts down."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse, ClientSession
from aiohttp.test_utils import TestServer
from tus_fixtures import LiveServer, live_server

from freight.client.chunks import upload_chunks
from freight.config import ServerConfig
from freight.server import events
from freight.server.app import create_app

KiB = 1024


class EventStream:
    """Reads SSE messages: ``(event name, parsed data)``, or ``("comment", text)``."""

    def __init__(self, response: ClientResponse) -> None:
        self.response = response

    async def next(self, timeout: float = 10.0) -> tuple[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                fields: dict[str, str] = {}
                while (line := (await self.response.content.readline()).decode()) not in ("\n", ""):
                    name, _, value = line.rstrip("\n").partition(":")
                    fields[name] = value.removeprefix(" ")
                if line == "" and not fields:
                    return "eof", None
                if "" in fields:
                    return "comment", fields[""]
                if "event" in fields:
                    return fields["event"], json.loads(fields["data"])
                # A block with only `retry:` sets the reconnection delay; nothing to report.

    async def until(self, predicate: Any, timeout: float = 20.0) -> list[tuple[str, Any]]:
        """Messages read until one satisfies ``predicate`` (included)."""
        seen: list[tuple[str, Any]] = []
        async with asyncio.timeout(timeout):
            while True:
                message = await self.next(timeout)
                seen.append(message)
                if predicate(*message):
                    return seen


async def _open(http: ClientSession, url: str) -> EventStream:
    response = await http.get(f"{url}/api/events")
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/event-stream"
    assert response.headers["Cache-Control"] == "no-store"
    return EventStream(response)


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[LiveServer]:
    async with live_server(tmp_path / "data") as server:
        yield server


async def test_snapshot_then_live_events_of_a_chunk_upload(
    live: LiveServer, tmp_path: Path
) -> None:
    waiting_url = await live.create(100)
    assert (await live.patch(waiting_url, 0, b"0123456789")).status == 204
    waiting_id = waiting_url.rsplit("/", 1)[1]

    stream = await _open(live.http, live.url)
    kind, snapshot = await stream.next()
    assert kind == "snapshot"
    [entry] = snapshot["uploads"]
    assert entry["id"] == waiting_id and entry["event"] == "progress"
    assert entry["received_bytes"] == 10 and entry["size"] == 100

    payload = os.urandom(3 * 1024 * KiB + 5)
    source = tmp_path / "three.bin"
    source.write_bytes(payload)
    sending = asyncio.ensure_future(
        upload_chunks(source, live.url, parallel=4, requested_chunk_size=256 * KiB)
    )
    seen = await stream.until(lambda kind, data: kind == "finished")
    result = await sending
    upload_id = result.url.rsplit("/", 1)[1]

    mine = [(kind, data) for kind, data in seen if data and data.get("id") == upload_id]
    kinds = [kind for kind, _ in mine]
    assert kinds[0] == "created" and kinds[-1] == "finished"
    # Progress in between is coalesced (a stream wakes at most every 0.1 s): maybe none.
    assert set(kinds) <= {"created", "progress", "finished"} and kinds.count("finished") == 1
    received = [data["received_bytes"] for _, data in mine]
    assert received == sorted(received) and received[0] == 0
    for kind, data in mine:
        assert data["event"] == kind and data["name"] == "three.bin"
        assert 0 <= data["received_bytes"] <= data["transferred_bytes"] <= data["size"]
        assert data["size"] == len(payload)
    finished = mine[-1][1]
    assert finished["received_bytes"] == len(payload)
    assert finished["sha256"] == hashlib.sha256(payload).hexdigest()

    async with live.http.delete(waiting_url, headers={"Tus-Resumable": "1.0.0"}) as resp:
        assert resp.status == 204
    kind, gone = await stream.next()
    assert (kind, gone["id"], gone["event"]) == ("deleted", waiting_id, "deleted")
    stream.response.close()


async def test_keepalive_when_nothing_happens(
    live: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(events, "KEEPALIVE_SECONDS", 0.1)
    stream = await _open(live.http, live.url)
    assert (await stream.next())[0] == "snapshot"
    assert await stream.next(2) == ("comment", "keepalive")
    assert await stream.next(2) == ("comment", "keepalive")
    stream.response.close()


async def test_a_client_that_leaves_is_unsubscribed(
    live: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(events, "KEEPALIVE_SECONDS", 0.1)
    baseline = live.engine.events.subscriber_count
    streams = [await _open(live.http, live.url) for _ in range(3)]
    for stream in streams:
        assert (await stream.next())[0] == "snapshot"
    assert live.engine.events.subscriber_count == baseline + 3
    for stream in streams:
        stream.response.close()
    deadline = time.monotonic() + 5
    while live.engine.events.subscriber_count > baseline:
        assert time.monotonic() < deadline, "a stream outlived its client"
        await asyncio.sleep(0.05)


async def test_shutdown_ends_streams_at_once(tmp_path: Path) -> None:
    server = TestServer(create_app(ServerConfig(data_dir=tmp_path / "data")), host="127.0.0.1")
    await server.start_server()
    async with ClientSession() as http:
        stream = await _open(http, str(server.make_url("")).rstrip("/"))
        assert (await stream.next())[0] == "snapshot"
        started = time.monotonic()
        await server.close()
        # Without the shutdown hook aiohttp would wait for the stream's next keepalive (15 s)
        # or its own shutdown timeout (60 s).
        assert time.monotonic() - started < 3
        assert await stream.next(2) == ("eof", None)
