"""Claims and the in-memory record of an upload being written.

A writer claims the byte range it will write; a claim overlapping another one is refused
with :class:`UploadLocked`. A claim may carry an ``interrupt`` that ends the request holding
it: a newer request for the same bytes takes the upload over by interrupting the older one
and waiting (at most :data:`TAKE_OVER_WAIT` seconds) for it to let go.

Saving an :class:`ActiveUpload` goes through :func:`save_active`, which keeps the saves of
one upload in order so two recordings never lose each other's ranges.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from freight.core.hashing import StatefulSha256
from freight.core.ports import PartFile, UploadStore
from freight.core.session import ConcatKind, UploadSession, UploadState
from freight.core.writer import UploadWriter
from freight.errors import OffsetMismatch, UploadForbidden, UploadLocked

__all__ = [
    "EVERYTHING",
    "TAKE_OVER_WAIT",
    "ActiveUpload",
    "Claim",
    "check_offset",
    "check_writable",
    "interrupt",
    "save_active",
]

# The engine's log lines keep the engine's logger, whichever of its modules writes them.
log = logging.getLogger("freight.core.engine")

# A claim's end when it reaches past any byte an upload can have.
EVERYTHING = 1 << 63
# How long a request taking an upload over waits for the interrupted one to let go.
TAKE_OVER_WAIT = 5.0


@dataclass(eq=False)
class Claim:
    """A byte range one request is writing; ``interrupt`` ends that request (take-over)."""

    start: int
    end: int
    interrupt: Callable[[], None] | None = None
    released: asyncio.Event = field(default_factory=asyncio.Event)
    writer: UploadWriter | None = None  # the writer holding it, once there is one

    def overlaps(self, start: int, end: int) -> bool:
        return self.start < end and start < self.end


@dataclass
class ActiveUpload:
    """The in-memory side of a session that is being written or was recently."""

    session: UploadSession
    hasher: StatefulSha256 | None
    claims: list[Claim] = field(default_factory=list)
    part: PartFile | None = None
    save_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    writers: set[UploadWriter] = field(default_factory=set)
    bytes_written: int = 0  # every byte written since start-up, duplicates included
    last_progress: float = 0.0
    catch_up: asyncio.Task[None] | None = None  # hashing received bytes from disk
    forgotten: bool = False  # deleted: background work must not save it again
    hash_moved: asyncio.Event = field(default_factory=asyncio.Event)  # set at each hash step

    @property
    def hash_is_free(self) -> bool:
        busy = self.catch_up is not None and not self.catch_up.done()
        return self.hasher is not None and not busy

    @property
    def transferred(self) -> int:
        """Durable bytes plus those on disk that a writer has not recorded yet."""
        return self.session.received.total() + sum(w.unrecorded for w in self.writers)

    def claim(self, start: int, end: int, interrupt: Callable[[], None] | None = None) -> Claim:
        if self.blocking(start, end):
            raise UploadLocked("another request is writing this upload right now")
        claim = Claim(start, end, interrupt)
        self.claims.append(claim)
        return claim

    def blocking(self, start: int, end: int) -> list[Claim]:
        return [claim for claim in self.claims if claim.overlaps(start, end)]

    def unclaim(self, claim: Claim) -> None:
        self.claims.remove(claim)
        claim.released.set()

    async def take_over(self, start: int, end: int, rewrites: int | None) -> bool:
        """Interrupt the requests writing ``[start, end)`` and wait for them to let go.

        They keep what they made durable, except bytes from ``rewrites`` on (the newer
        request sends those again). Returns whether it waited (and so whether this record
        may be stale).
        """
        blocking = self.blocking(start, end)
        if not blocking or any(claim.interrupt is None for claim in blocking):
            return False  # nothing to take, or held by work that cannot be interrupted
        log.info("upload %s: a new request takes over from a running one", self.session.id)
        for claim in blocking:
            if rewrites is not None and claim.writer is not None:
                claim.writer.yield_from(rewrites)
        await interrupt(blocking)
        return True


async def interrupt(claims: Sequence[Claim]) -> None:
    """End the requests holding ``claims`` and wait (a while) for them to let go."""
    for claim in claims:
        if claim.interrupt is not None:
            claim.interrupt()
    waits = [asyncio.ensure_future(claim.released.wait()) for claim in claims]
    if not waits:
        return
    _, pending = await asyncio.wait(waits, timeout=TAKE_OVER_WAIT)
    for wait in pending:
        wait.cancel()


async def save_active(
    store: UploadStore,
    active: ActiveUpload,
    *,
    added: tuple[int, int] | None = None,
    apply: bool = False,
    **changes: Any,
) -> None:
    """Save the session with ``changes`` and the ``added`` byte range.

    Saves of one upload go in order; each writes a snapshot so the loop may go on.
    ``apply`` makes the changes in memory too, once saved, under the same lock, so two
    recordings of one upload never lose each other's ranges.
    """
    async with active.save_lock:
        session = active.session
        received = session.received.copy()
        if added is not None:
            received.add(*added)
        snapshot = dataclasses.replace(
            session, received=received, metadata=dict(session.metadata), **changes
        )
        await asyncio.to_thread(store.save, snapshot)
        if apply:
            if added is not None:
                session.received.add(*added)
            for name, value in changes.items():
                setattr(session, name, value)


def check_writable(session: UploadSession, offset: int, sequential: bool) -> None:
    """Refuse writing ``session`` from ``offset`` if its state or length forbid it."""
    if session.concat_kind is ConcatKind.FINAL:
        raise UploadForbidden("a final concatenation cannot be written to")
    if session.state is not UploadState.RECEIVING:
        raise OffsetMismatch("this upload is already complete", offset=session.offset)
    if session.length is not None and offset > session.length:
        raise OffsetMismatch(
            f"offset {offset} is past the upload's length {session.length}",
            offset=session.offset,
        )
    if not sequential and offset < 0:
        raise OffsetMismatch("offsets are never negative", offset=session.offset)


def check_offset(session: UploadSession, offset: int) -> None:
    """Refuse a sequential write from anywhere but the upload's current offset."""
    if offset != session.offset:
        raise OffsetMismatch(
            f"the upload is at offset {session.offset}, not {offset}", offset=session.offset
        )
