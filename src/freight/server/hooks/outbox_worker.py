"""Delivering the hook outbox until every entry arrives: at least once, across restarts.

The worker leases due entries (:meth:`~freight.core.ports.HookOutbox.take_due`), delivers
them, and removes each one its targets took or reschedules it with exponential backoff
(1, 2, 4 ... seconds, at most ``retry_max``, with jitter so a fleet's retries spread). An
entry stays in the outbox until it is delivered: a process killed mid-delivery leaves it
leased, and it is taken again once the lease runs out, by this node after a restart or by
any other. The receiver may so get an event twice, always with the same idempotency key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable

from freight.core.ports import HookOutbox, OutboxEntry
from freight.errors import FreightError

__all__ = ["BATCH", "POLL", "OutboxWorker", "backoff"]

log = logging.getLogger("freight.server.hooks")

BATCH = 16  # entries being delivered at once, at most
POLL = 1.0  # seconds between looks at the outbox when nothing wakes the worker
# Failures of the outbox itself (its database away) are logged at most this often.
_LOG_EVERY = 30.0


def backoff(attempts: int, retry_max: float) -> float:
    """Seconds before the next attempt after ``attempts`` failed ones (jittered)."""
    return min(retry_max, 2.0 ** min(attempts, 30)) * random.uniform(0.75, 1.0)


class OutboxWorker:
    def __init__(
        self,
        outbox: HookOutbox,
        deliver: Callable[[OutboxEntry], Awaitable[str | None]],
        wake: asyncio.Event,
        *,
        lease: float,
        retry_max: float,
        clock: Callable[[], float],
    ) -> None:
        self._outbox = outbox
        self._deliver = deliver
        self._wake = wake
        self._lease = lease
        self._retry_max = retry_max
        self._clock = clock
        self._logged = -_LOG_EVERY
        self._failure_logged = -_LOG_EVERY
        self._failed = 0

    async def run(self) -> None:
        """Deliver until cancelled: up to :data:`BATCH` entries at once, each on its own, so
        one slow receiver's answer holds back no other entry."""
        in_flight: set[asyncio.Task[None]] = set()
        try:
            while True:
                self._wake.clear()
                room = BATCH - len(in_flight)
                taken = await self._take(room) if room > 0 else []
                for entry in taken:
                    task = asyncio.ensure_future(self._settle(entry))
                    in_flight.add(task)
                    task.add_done_callback(in_flight.discard)
                    task.add_done_callback(lambda _: self._wake.set())  # room again
                if len(taken) < room or room == 0:
                    # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a
                    # cancel that lands as the wake fires, and close() would wait forever.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(POLL):
                            await self._wake.wait()
        finally:
            for task in in_flight:
                task.cancel()  # their leases run out: they are taken again

    async def _take(self, limit: int) -> list[OutboxEntry]:
        try:
            return await self._outbox.take_due(self._clock(), limit, self._lease)
        except FreightError as exc:
            self._complain("cannot read the hook outbox: %s", exc)
            return []

    async def _settle(self, entry: OutboxEntry) -> None:
        error = await self._deliver(entry)
        try:
            if error is None:
                await self._outbox.delivered(entry.key)
                return
            due = self._clock() + backoff(entry.attempts + 1, self._retry_max)
            await self._outbox.retry_later(entry.key, due, error)
        except FreightError as exc:  # the lease runs out: it is taken again
            self._complain("cannot settle a hook event: %s", exc)
            return
        self._failed += 1
        now = self._clock()
        if now - self._failure_logged >= _LOG_EVERY:  # a receiver down: one line a while
            self._failure_logged = now
            log.warning(
                "%d hook deliveries failed (retried until delivered); last %s: %s",
                self._failed,
                entry.key,
                error,
            )
            self._failed = 0

    def _complain(self, message: str, exc: FreightError) -> None:
        now = self._clock()
        if now - self._logged >= _LOG_EVERY:
            self._logged = now
            log.warning(message, exc)
