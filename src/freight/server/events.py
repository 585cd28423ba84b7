"""``GET /api/events``: live progress of every transfer as Server-Sent Events.

The stream starts with one ``snapshot`` event listing the uploads in progress, then relays
each engine event (any protocol) as it happens::

    retry: 3000

    event: snapshot
    data: {"uploads": [{"id": ..., "received_bytes": ..., ...}]}

    event: progress
    data: {"event": "progress", "id": ..., "received_bytes": ..., "transferred_bytes": ...}

A snapshot entry has the shape of an event's data (``event`` is ``"progress"``), so a page
updates its rows the same way from both. It lists up to :data:`SNAPSHOT_LIMIT` uploads in
progress (since the server started), most recently active first. Event kinds: ``created``,
``progress``, ``finished``, ``deleted``. Events are coalesced (:mod:`freight.core.events`):
a stream wakes at most every 0.1 s and gets, per upload that changed, its ``created`` and
final event if it had not seen them and its latest state, so however slow a client is it
sees how every upload ended and the server holds nothing per stream but its socket buffer.
A stream that fell so far behind that an ended upload was forgotten gets a new snapshot.
A ``: keepalive`` comment goes out when nothing happened for :data:`KEEPALIVE_SECONDS`,
which keeps proxies from closing an idle stream and shows when the client has gone. The
snapshot and the stream's place in the events are taken together, so nothing falls
between the two.

Shutdown never waits for a stream: the application's ``on_shutdown`` wakes every stream,
which ends its response cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
from typing import Any

from aiohttp import web

from freight.core.events import UploadEvent, Watcher
from freight.core.users import Principal
from freight.errors import Unauthorized
from freight.protocol.metadata import safe_filename
from freight.server.middleware import bearer
from freight.server.principals import GATE, principal_of
from freight.server.state import ENGINE

__all__ = ["KEEPALIVE_SECONDS", "STOPPING", "add_event_routes", "format_event", "snapshot_entry"]

KEEPALIVE_SECONDS = 15.0
SNAPSHOT_LIMIT = 1000  # uploads in progress listed on subscribing, most recently active first
RECONNECT_MILLISECONDS = 3000

STOPPING = web.AppKey("freight.events_stopping", asyncio.Event)
"""Set when the application shuts down; every event stream then ends."""


def format_event(kind: str, data: dict[str, Any]) -> bytes:
    """One SSE message. ``json.dumps`` escapes newlines, so the data is always one line."""
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def snapshot_entry(event: UploadEvent) -> dict[str, Any]:
    """An upload in progress, shaped like a ``progress`` event's data."""
    return {**_event_data(event), "event": "progress", "sha256": None}


def _event_data(event: UploadEvent) -> dict[str, Any]:
    data = event.to_dict()
    del data["owner"]  # for the server's filtering (and other nodes); not the stream's
    # Names come from clients: show them as the rest of the API does.
    data["name"] = safe_filename(event.name, "") or None
    if event.size is not None:
        # The engine's progress event for a writer's last bytes counts them both as received
        # and as still unrecorded; a progress bar must never pass 100 %.
        data["transferred_bytes"] = min(event.transferred, event.size)
    return data


@functools.lru_cache(maxsize=4096)
def _encoded(event: UploadEvent) -> bytes:
    """An event as its SSE message; every stream sends the same bytes, made once."""
    return format_event(event.kind.value, _event_data(event))


def _snapshot(watcher: Watcher, principal: Principal) -> bytes:
    """Uploads in progress that ``principal`` may see (a user sees only their own)."""
    seen = (e for e in watcher.snapshot(SNAPSHOT_LIMIT) if principal.may_see(e.owner))
    return format_event("snapshot", {"uploads": [snapshot_entry(event) for event in seen]})


async def events_endpoint(request: web.Request) -> web.StreamResponse:
    engine = request.app[ENGINE]
    stopping = request.app[STOPPING]
    principal = principal_of(request)
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            # nginx buffers responses unless told not to; events must flow as they happen.
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    # A client that went away shows up as a failed write: end quietly.
    with contextlib.suppress(ConnectionError), engine.events.watch() as watcher:
        await response.write(f"retry: {RECONNECT_MILLISECONDS}\n\n".encode())
        await response.write(_snapshot(watcher, principal))
        while not stopping.is_set():
            await watcher.wait(KEEPALIVE_SECONDS)
            if stopping.is_set() or not await _still_admitted(request, principal):
                break
            if watcher.behind:  # it missed how some upload ended: start again
                await response.write(_snapshot(watcher, principal))
                continue
            # One write per wake: a slow client holds this task in ``write`` (bounded by
            # the transport's buffer) while the hub coalesces what it has not seen yet.
            events = [e for e in watcher.take() if principal.may_see(e.owner)]
            await response.write(b"".join(map(_encoded, events)) or b": keepalive\n\n")
        await response.write_eof()
    return response


async def _still_admitted(request: web.Request, principal: Principal) -> bool:
    """Whether the caller's token still stands for ``principal``: a revoked or rotated
    token ends its open streams at their next wake, not when the client leaves."""
    try:
        return await request.app[GATE].identify(bearer(request)) == principal
    except Unauthorized:
        return False


async def _stop_streams(app: web.Application) -> None:
    app[STOPPING].set()
    app[ENGINE].events.wake()


def add_event_routes(app: web.Application) -> None:
    app[STOPPING] = asyncio.Event()
    app.router.add_get("/api/events", events_endpoint)
    app.on_shutdown.append(_stop_streams)
