"""A webhook receiver for the hook tests: a real aiohttp server on 127.0.0.1 in a thread of
its own (so a test may block on subprocesses and plain HTTP meanwhile).

It verifies every request's signature (:mod:`freight.server.hooks.signing`, the same check
the README shows), records what it got, and refuses ``pre-create`` for a ``filename``
ending in ``.exe`` and ``pre-finish`` for one starting with ``virus``. It can be stopped
and started again on the same port (a receiver that is down).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from freight.server.hooks.signing import verify

SECRET = "test-hook-secret"


@dataclass(frozen=True)
class Received:
    event: str
    key: str
    body: dict[str, Any]
    headers: dict[str, str]
    signed: bool


class Receiver:
    def __init__(self, secret: str = SECRET) -> None:
        self.secret = secret
        self.received: list[Received] = []
        self.port = 0
        self.delay = 0.0  # seconds before answering (a slow receiver)
        self.holding = False  # answer nothing until this is cleared (a hung receiver)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._runner: web.AppRunner | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def _call(self, work: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(work, self._loop).result(30)

    def start(self) -> Receiver:
        self._call(self._start())
        return self

    def stop(self) -> None:
        self._call(self._stop())

    def close(self) -> None:
        self.holding = False
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _hook(self, request: web.Request) -> web.Response:
        raw = await request.read()
        signed = verify(
            self.secret,
            request.headers.get("Freight-Hook-Timestamp", ""),
            request.headers.get("Freight-Hook-Signature", ""),
            raw,
            now=time.time(),
            tolerance=300,
        )
        if not signed:
            return web.Response(status=401)
        body = json.loads(raw)
        got = Received(
            event=request.headers["Freight-Hook-Event"],
            key=request.headers["Idempotency-Key"],
            body=body,
            headers=dict(request.headers),
            signed=signed,
        )
        with self._lock:
            self.received.append(got)
        if self.delay:
            await asyncio.sleep(self.delay)
        while self.holding:
            await asyncio.sleep(0.02)
        return web.json_response(decide(got.event, body))

    def events(self, event: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.event == event]

    def wait_for(self, event: str, count: int, timeout: float) -> list[Received]:
        """Block until ``count`` distinct uploads got ``event`` (or fail after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.events(event)
            if len({r.body["upload"]["id"] for r in got}) >= count:
                return got
            time.sleep(0.05)
        raise AssertionError(f"{event}: {len(self.events(event))} of {count} in {timeout} s")


def decide(event: str, body: dict[str, Any]) -> dict[str, Any]:
    name = body["upload"]["metadata"].get("filename") or ""
    if event == "pre-create" and name.endswith(".exe"):
        return {"reject": True, "status": 403, "message": "no executables here"}
    if event == "pre-finish" and name.startswith("virus"):
        return {"reject": True, "status": 422, "message": "infected"}
    if event == "pre-create":
        return {"metadata": {"checked-by": "receiver"}}
    return {}
