"""What the engine tells observers: uploads appearing, moving, finishing and going away.

Every protocol's uploads produce the same events, so one dashboard (the ``/api/events``
stream) shows transfers from the CLI, tus clients, browsers and raw TCP alike. Publishing
never blocks the engine: a subscriber that falls behind loses its oldest events, and
progress events are rate-limited per upload.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["EventHub", "UploadEvent", "UploadEventKind"]


class UploadEventKind(enum.Enum):
    CREATED = "created"
    PROGRESS = "progress"
    FINISHED = "finished"
    DELETED = "deleted"


@dataclass(frozen=True)
class UploadEvent:
    """``received`` counts durable bytes; ``transferred`` adds bytes on disk not yet synced."""

    kind: UploadEventKind
    upload_id: str
    name: str | None
    size: int | None
    received: int
    transferred: int
    at: float
    sha256: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "event": self.kind.value,
            "id": self.upload_id,
            "name": self.name,
            "size": self.size,
            "received_bytes": self.received,
            "transferred_bytes": self.transferred,
            "at": self.at,
            "sha256": self.sha256,
        }


class EventHub:
    """Fans events out to subscribers through bounded queues."""

    def __init__(self, queue_size: int = 256) -> None:
        self._queue_size = queue_size
        self._subscribers: set[asyncio.Queue[UploadEvent]] = set()

    def publish(self, event: UploadEvent) -> None:
        for queue in self._subscribers:
            if queue.full():
                queue.get_nowait()  # a slow reader loses the oldest, never the newest
            queue.put_nowait(event)

    @contextlib.contextmanager
    def subscribe(self) -> Iterator[asyncio.Queue[UploadEvent]]:
        queue: asyncio.Queue[UploadEvent] = asyncio.Queue(self._queue_size)
        self._subscribers.add(queue)
        try:
            yield queue
        finally:
            self._subscribers.discard(queue)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)
