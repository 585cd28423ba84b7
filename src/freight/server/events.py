"""``GET /api/events``: live progress of every transfer as Server-Sent Events.

The stream starts with one ``snapshot`` event listing the uploads in progress, then relays
each engine event (any protocol) as it happens::

    retry: 3000

    event: snapshot
    data: {"uploads": [{"id": ..., "received_bytes": ..., ...}]}

    event: progress
    data: {"event": "progress", "id": ..., "received_bytes": ..., "transferred_bytes": ...}

A snapshot entry has the shape of an event's data (``event`` is ``"progress"``), so a page
updates its rows the same way from both. Event kinds: ``created``, ``progress``,
``finished``, ``deleted``. A ``: keepalive`` comment goes out when nothing happened for
:data:`KEEPALIVE_SECONDS`, which keeps proxies from closing an idle stream and shows when
the client has gone. The subscription is taken before the snapshot is read, so nothing
falls between the two (an upload may appear in both; the later one wins).

Shutdown never waits for a stream: the application's ``on_shutdown`` wakes every stream,
which ends its response cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from aiohttp import web

from freight.core import UploadEngine, UploadSession, UploadState
from freight.core.events import UploadEvent
from freight.protocol.metadata import safe_filename
from freight.server.state import ENGINE

__all__ = ["KEEPALIVE_SECONDS", "STOPPING", "add_event_routes", "format_event", "snapshot_entry"]

KEEPALIVE_SECONDS = 15.0
RECONNECT_MILLISECONDS = 3000

STOPPING = web.AppKey("freight.events_stopping", asyncio.Event)
"""Set when the application shuts down; every event stream then ends."""


def format_event(kind: str, data: dict[str, Any]) -> bytes:
    """One SSE message. ``json.dumps`` escapes newlines, so the data is always one line."""
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def snapshot_entry(session: UploadSession, at: float) -> dict[str, Any]:
    """An upload in progress, shaped like a ``progress`` event's data."""
    received = session.received.total()
    return {
        "event": "progress",
        "id": session.id,
        "name": safe_filename(session.name, "") or None,
        "size": session.length,
        "received_bytes": received,
        "transferred_bytes": received,
        "at": at,
        "sha256": None,
    }


def _event_data(event: UploadEvent) -> dict[str, Any]:
    data = event.to_dict()
    # Names come from clients: show them as the rest of the API does.
    data["name"] = safe_filename(event.name, "") or None
    if event.size is not None:
        # The engine's progress event for a writer's last bytes counts them both as received
        # and as still unrecorded; a progress bar must never pass 100 %.
        data["transferred_bytes"] = min(event.transferred, event.size)
    return data


async def _snapshot(engine: UploadEngine) -> bytes:
    now = engine.clock()
    uploads = [
        snapshot_entry(session, now)
        for session in await engine.list_sessions()
        if session.state is UploadState.RECEIVING
        and (session.expires is None or session.expires >= now)
    ]
    return format_event("snapshot", {"uploads": uploads})


async def _next_event(
    queue: asyncio.Queue[UploadEvent], stopping: asyncio.Event, timeout: float
) -> UploadEvent | None:
    """The next event; None after ``timeout`` seconds of quiet or once ``stopping`` is set."""
    getter = asyncio.ensure_future(queue.get())
    stopper = asyncio.ensure_future(stopping.wait())
    try:
        await asyncio.wait({getter, stopper}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        # A cancelled Queue.get takes nothing from the queue, so no event is lost.
        getter.cancel()
        stopper.cancel()
    if getter.done() and not getter.cancelled():
        return getter.result()
    return None


async def events_endpoint(request: web.Request) -> web.StreamResponse:
    engine = request.app[ENGINE]
    stopping = request.app[STOPPING]
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
    with contextlib.suppress(ConnectionError), engine.events.subscribe() as queue:
        await response.write(f"retry: {RECONNECT_MILLISECONDS}\n\n".encode())
        await response.write(await _snapshot(engine))
        while not stopping.is_set():
            event = await _next_event(queue, stopping, KEEPALIVE_SECONDS)
            if event is not None:
                await response.write(format_event(event.kind.value, _event_data(event)))
            elif not stopping.is_set():
                await response.write(b": keepalive\n\n")
        await response.write_eof()
    return response


async def _stop_streams(app: web.Application) -> None:
    app[STOPPING].set()


def add_event_routes(app: web.Application) -> None:
    app[STOPPING] = asyncio.Event()
    app.router.add_get("/api/events", events_endpoint)
    app.on_shutdown.append(_stop_streams)
