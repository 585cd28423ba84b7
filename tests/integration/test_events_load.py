"""``/api/events`` under load: many subscribers must not slow the uploads they watch.

A real ``freight serve`` process; 1,000 SSE subscribers held open by this process over real
loopback connections; small tus uploads timed one at a time with and without them. Every
subscriber must see each upload's ``finished`` event.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import aiohttp

TUS = {"Tus-Resumable": "1.0.0"}
SUBSCRIBERS = 1000
UPLOADS = 7


class Subscriber:
    """One SSE stream; remembers the ids whose ``finished`` event it saw."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.finished: set[str] = set()
        self.changed = asyncio.Event()

    async def read(self) -> None:
        event = ""
        async for raw in self.response.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "finished":
                self.finished.add(json.loads(line[6:])["id"])
                self.changed.set()


async def small_upload(http: aiohttp.ClientSession, url: str) -> tuple[str, float]:
    """A 3-byte tus upload; returns its id and how long it took."""
    started = time.perf_counter()
    headers = {**TUS, "Upload-Length": "3"}
    async with http.post(f"{url}/files/", headers=headers) as resp:
        assert resp.status == 201
        location = resp.headers["Location"]
    patch = {**TUS, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"}
    async with http.patch(
        location if "//" in location else url + location, headers=patch, data=b"abc"
    ) as resp:
        assert resp.status == 204
    return location.rsplit("/", 1)[1], time.perf_counter() - started


async def timed_uploads(
    http: aiohttp.ClientSession, url: str, seen_by_all: Callable[[str], Any]
) -> list[float]:
    """Uploads one at a time, each after the subscribers have seen the last one end."""
    latencies = []
    for _ in range(UPLOADS):
        upload_id, took = await small_upload(http, url)
        latencies.append(took)
        await asyncio.wait_for(seen_by_all(upload_id), 60)
        await asyncio.sleep(0.3)  # let both processes settle before the next one
    return latencies


async def test_a_thousand_subscribers_do_not_slow_an_upload(freight_server: Any) -> None:
    """Before: each upload took about 10x as long (every event went into every queue)."""
    url = freight_server.url
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession() as http, aiohttp.ClientSession(connector=connector) as sse:
        await small_upload(http, url)  # warm up
        alone = await timed_uploads(http, url, lambda _: asyncio.sleep(0))

        subscribers = []
        for _ in range(SUBSCRIBERS):
            response = await sse.get(f"{url}/api/events", timeout=aiohttp.ClientTimeout(None))
            assert response.status == 200
            subscribers.append(Subscriber(response))
        readers = [asyncio.ensure_future(s.read()) for s in subscribers]
        await asyncio.sleep(1.0)

        async def seen_by_all(upload_id: str) -> None:
            for subscriber in subscribers:
                while upload_id not in subscriber.finished:
                    subscriber.changed.clear()
                    await subscriber.changed.wait()

        try:
            watched = await timed_uploads(http, url, seen_by_all)
        finally:
            for reader in readers:
                reader.cancel()
            for subscriber in subscribers:
                subscriber.response.close()
    alone_ms, watched_ms = statistics.median(alone) * 1000, statistics.median(watched) * 1000
    print(
        f"3-byte upload, median of {UPLOADS}: {alone_ms:.1f} ms alone, {watched_ms:.1f} ms "
        f"with {SUBSCRIBERS} subscribers"
    )
    assert watched_ms < max(2.5 * alone_ms, alone_ms + 25), (alone, watched)
