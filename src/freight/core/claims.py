"""Byte-range claims with take-over, in one process: today's :class:`ClaimRegistry`.

A writer claims the byte range it will write; a claim overlapping another one is refused
with :class:`UploadLocked`. A claim may carry an ``interrupt`` that ends the request holding
it: a newer request for the same bytes takes the upload over by interrupting the older one
and waiting (at most :data:`TAKE_OVER_WAIT` seconds) for it to let go.

The registry knows claims by upload id, never the uploads themselves, so a registry shared
by several processes (the same port over a database) can stand in for this one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from freight.core.ports import HeldClaim
from freight.errors import UploadLocked

__all__ = ["EVERYTHING", "TAKE_OVER_WAIT", "Claim", "InProcessClaims"]

# The engine's log lines keep the engine's logger, whichever of its modules writes them.
log = logging.getLogger("freight.core.engine")

# A claim's end when it reaches past any byte an upload can have.
EVERYTHING = (1 << 63) - 1  # the largest bigint, so any store can keep it
# How long a request taking an upload over waits for the interrupted one to let go.
TAKE_OVER_WAIT = 5.0


@dataclass(eq=False)
class Claim:
    """A byte range one request is writing; ``interrupt(rewrites)`` ends that request."""

    upload_id: str
    start: int
    end: int
    interrupt: Callable[[int | None], None] | None = None
    released: asyncio.Event = field(default_factory=asyncio.Event)

    def overlaps(self, start: int, end: int) -> bool:
        return self.start < end and start < self.end


class InProcessClaims:
    """Claims held by the requests of this process."""

    def __init__(self) -> None:
        self._by_upload: dict[str, list[Claim]] = {}

    async def claim(
        self,
        upload_id: str,
        start: int,
        end: int,
        interrupt: Callable[[int | None], None] | None = None,
    ) -> Claim:
        if self._blocking(upload_id, start, end):
            raise UploadLocked("another request is writing this upload right now")
        claim = Claim(upload_id, start, end, interrupt)
        self._by_upload.setdefault(upload_id, []).append(claim)
        return claim

    async def release(self, claim: HeldClaim) -> None:
        assert isinstance(claim, Claim)
        held = self._by_upload.get(claim.upload_id, [])
        if claim in held:
            held.remove(claim)
            if not held:
                del self._by_upload[claim.upload_id]
        claim.released.set()

    async def held(self, upload_id: str) -> bool:
        return self.held_here(upload_id)

    def held_here(self, upload_id: str) -> bool:
        return bool(self._by_upload.get(upload_id))

    def _blocking(self, upload_id: str, start: int, end: int) -> list[Claim]:
        return [c for c in self._by_upload.get(upload_id, ()) if c.overlaps(start, end)]

    async def take_over(self, upload_id: str, start: int, end: int, rewrites: int | None) -> bool:
        """Interrupt the requests writing ``[start, end)`` and wait for them to let go.

        They keep what they made durable, except bytes from ``rewrites`` on (the newer
        request sends those again). Returns whether it waited (and so whether what the
        caller knew of the upload may be stale).
        """
        blocking = self._blocking(upload_id, start, end)
        if not blocking or any(claim.interrupt is None for claim in blocking):
            return False  # nothing to take, or held by work that cannot be interrupted
        log.info("upload %s: a new request takes over from a running one", upload_id)
        await _interrupt(blocking, rewrites)
        return True

    async def interrupt_all(self) -> None:
        await _interrupt([c for held in self._by_upload.values() for c in held], None)


async def _interrupt(claims: Sequence[Claim], rewrites: int | None) -> None:
    """End the requests holding ``claims`` and wait (a while) for them to let go."""
    for claim in claims:
        if claim.interrupt is not None:
            claim.interrupt(rewrites)
    waits = [asyncio.ensure_future(claim.released.wait()) for claim in claims]
    if not waits:
        return
    _, pending = await asyncio.wait(waits, timeout=TAKE_OVER_WAIT)
    for wait in pending:
        wait.cancel()
