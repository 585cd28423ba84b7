"""What happens to uploads on every node, seen on any node: :class:`EventBus` over
PostgreSQL ``LISTEN``/``NOTIFY``.

Each node keeps its own :class:`~freight.core.events.EventHub` (what its watchers and
subscribers read). :meth:`PgEvents.publish` puts an event in it and sends it to the other
nodes on one channel; each node's dedicated link (:mod:`freight.storage.pg_link`) listens
and publishes what other nodes sent into its own hub, but never sends it on. So
``/api/events`` on any node shows the transfers of all nodes.

PostgreSQL must not be flooded: progress of one upload goes out at most every
``progress_every`` seconds (the latest value; an upload's first progress goes at once),
``created``/``finished``/``deleted`` at once (a pending progress of an upload that ended is
dropped: the final event says more). Events are batched into payloads under PostgreSQL's
8000-byte limit, a name cut short if need be. Delivery is best effort, like the hub's: while
a node's link is down what it publishes reaches only its own watchers, and a node that
starts learns of uploads elsewhere at their next event.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import asyncpg

from freight.core.events import EventHub, UploadEvent, UploadEventKind, Watcher
from freight.core.ports import EventBus
from freight.errors import FreightError
from freight.storage.pg_link import Link, LinkSettings

__all__ = ["CHANNEL", "MAX_PAYLOAD", "PgEvents", "open_pg_events"]

log = logging.getLogger("freight.storage.pg_events")

CHANNEL = "freight_events"
# PostgreSQL refuses a payload of 8000 bytes or more.
MAX_PAYLOAD = 7800
_MAX_NAME = 512
# Events waiting to go out beyond this are dropped, oldest first (a stalled link).
_MAX_OUTBOX = 4096


class PgEvents:
    """One node's events, shared with the others; :func:`open_pg_events` makes one."""

    def __init__(
        self,
        dsn: str,
        link_settings: LinkSettings,
        *,
        hub: EventHub | None = None,
        progress_every: float = 0.25,
    ) -> None:
        self.hub = hub or EventHub()
        self.progress_every = progress_every
        self.origin = secrets.token_hex(8)
        self.sent = 0  # events sent to other nodes (for tests and metrics)
        self.dropped = 0
        self._serial = itertools.count()
        self._outbox: list[UploadEvent] = []
        self._pending: OrderedDict[str, UploadEvent] = OrderedDict()  # progress held back
        self._next_progress: dict[str, float] = {}  # upload -> when its progress may go
        self._wakeup = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None
        self._link = Link(dsn, link_settings, on_up=self._on_up, on_down=self._on_down)

    async def start(self) -> None:
        await self._link.start()
        self._sender = asyncio.create_task(self._send_loop())

    # The EventBus port: the local hub, plus sending.

    def publish(self, event: UploadEvent) -> None:
        self.hub.publish(event)
        upload_id = event.upload_id
        if event.kind is UploadEventKind.PROGRESS:
            if time.monotonic() < self._next_progress.get(upload_id, 0.0):
                self._pending[upload_id] = event
                self._pending.move_to_end(upload_id)
                self._wakeup.set()
                return
            self._next_progress[upload_id] = time.monotonic() + self.progress_every
        else:
            self._pending.pop(upload_id, None)
            if event.kind is not UploadEventKind.CREATED:
                self._next_progress.pop(upload_id, None)
        self._outbox.append(event)
        if len(self._outbox) > _MAX_OUTBOX:
            del self._outbox[0]
            self.dropped += 1
        self._wakeup.set()

    def watch(self) -> contextlib.AbstractContextManager[Watcher]:
        return self.hub.watch()

    def subscribe(self) -> contextlib.AbstractContextManager[asyncio.Queue[UploadEvent]]:
        return self.hub.subscribe()

    def wake(self) -> None:
        self.hub.wake()

    @property
    def subscriber_count(self) -> int:
        return self.hub.subscriber_count

    # Sending.

    def _due(self, now: float) -> tuple[list[UploadEvent], float | None]:
        """Held-back progress whose time has come, and seconds until the next is due."""
        due: list[UploadEvent] = []
        wait: float | None = None
        for upload_id, event in list(self._pending.items()):
            when = self._next_progress.get(upload_id, 0.0)
            if when <= now:
                due.append(event)
                del self._pending[upload_id]
                self._next_progress[upload_id] = now + self.progress_every
            else:
                wait = when - now if wait is None else min(wait, when - now)
        # Uploads quiet for a while need no entry: their next progress goes at once.
        for upload_id in [u for u, t in self._next_progress.items() if t < now - 1]:
            if upload_id not in self._pending:
                del self._next_progress[upload_id]
        return due, wait

    async def _send_loop(self) -> None:
        wait: float | None = None
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wakeup.wait()
            self._wakeup.clear()
            due, wait = self._due(time.monotonic())
            batch, self._outbox = self._outbox + due, []
            if batch:
                await self._send(batch)

    async def _send(self, events: list[UploadEvent]) -> None:
        payloads = list(self._payloads(events))
        try:
            async with self._link.using("publishing events") as connection:
                await connection.execute(
                    "SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p", CHANNEL, payloads
                )
            self.sent += len(events)
        except FreightError as exc:
            self.dropped += len(events)
            log.warning("events: %d not sent to other nodes (%s)", len(events), exc)

    def _payloads(self, events: list[UploadEvent]) -> Iterator[str]:
        """JSON payloads under :data:`MAX_PAYLOAD` bytes, events in order."""
        batch: list[str] = []
        size = 0
        for event in events:
            item = _encode(event)
            length = len(item.encode()) + 2
            if batch and size + length > MAX_PAYLOAD - 64:
                yield self._wrap(batch)
                batch, size = [], 0
            batch.append(item)
            size += length
        if batch:
            yield self._wrap(batch)

    def _wrap(self, items: list[str]) -> str:
        # The serial keeps payloads distinct: PostgreSQL folds identical ones in a transaction.
        head = json.dumps({"from": self.origin, "n": next(self._serial)})[:-1]
        return f'{head}, "events": [{", ".join(items)}]}}'

    # Receiving.

    async def _on_up(self, connection: asyncpg.Connection) -> None:
        await connection.add_listener(CHANNEL, self._on_notify)

    def _on_down(self) -> None:
        log.warning("events link lost: other nodes' uploads are not seen until it is back")

    def _on_notify(self, connection: Any, pid: int, channel: str, payload: object) -> None:
        try:
            message = json.loads(str(payload))
            if message.get("from") == self.origin:
                return
            events = [UploadEvent.from_dict(item) for item in message["events"]]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("events: ignoring a malformed notification (%s)", exc)
            return
        for event in events:
            self.hub.publish(event)

    async def close(self) -> None:
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
            due, _ = self._due(float("inf"))
            if self._outbox or due:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(2):
                        await self._send(self._outbox + due)
        await self._link.close()


def _encode(event: UploadEvent) -> str:
    data = event.to_dict()
    if data["name"] is not None:
        data["name"] = data["name"][:_MAX_NAME]
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


async def open_pg_events(
    dsn: str,
    node: str,
    link_settings: LinkSettings | None = None,
    *,
    hub: EventHub | None = None,
    progress_every: float = 0.25,
) -> PgEvents:
    """This node's event bus on ``dsn``, listening already."""
    link_settings = link_settings or LinkSettings(application_name=f"freight-events-{node}")
    events = PgEvents(dsn, link_settings, hub=hub, progress_every=progress_every)
    await events.start()
    return events


_: type[EventBus] = PgEvents
