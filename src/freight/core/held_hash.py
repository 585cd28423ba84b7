"""Out-of-order bytes hashed when the prefix before them completes, where the hash is taken
inline (:mod:`freight.core.inline_hash`: a store without cheap read-back).

Writers hash only bytes that continue the hashed prefix. Bytes that arrived ahead of it
(parallel chunks, parts sent in any order) are recorded unhashed; when a record moves the
contiguous prefix past the hash, the node that made that record hashes them then, from what
its store still holds of them (:class:`~freight.core.blobs.HeldRanges`: an object store's
spool keeps uploaded parts the hash has not reached, boundedly, and can read pieces), and
saves the state at the new position with the session, so any node continues from there.
What the store no longer holds stops the hash there until finish, which reads the rest from
the finished blob.

The writer whose record moved the prefix waits for this (bytes of one part or a few, read
from the page cache), and its claim fences the save: a node that lost its claim records
nothing, its hash state included.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine

from freight.core.active_upload import ActiveUpload, persist
from freight.core.blobs import HeldRanges
from freight.core.buffers import ReadBuffers
from freight.core.hashing import StatefulSha256
from freight.core.ports import HeldClaim, SessionRepository
from freight.core.session import UploadState
from freight.errors import FreightError

__all__ = ["HeldHashing"]

log = logging.getLogger("freight.core.engine")

Spawn = Callable[[Coroutine[object, object, None]], "asyncio.Task[None]"]


class HeldHashing:
    """Moves uploads' inline hashes over recorded bytes that arrived out of order."""

    def __init__(
        self,
        sessions: SessionRepository,
        store: HeldRanges,
        read_buffers: Callable[[], ReadBuffers],
        spawn: Spawn,
    ) -> None:
        self.sessions = sessions
        self.store = store
        self._read_buffers = read_buffers
        self._spawn = spawn
        self.hashed_bytes = 0  # hashed from what the store held (a counter)

    def let_go(self, upload_id: str, offset: int) -> None:
        """The hash covers bytes before ``offset``: the store may drop what it held there."""
        self.store.hashed_through(upload_id, offset)

    async def follow(
        self, active: ActiveUpload, fence: HeldClaim | None, recorded: tuple[int, int] | None
    ) -> None:
        """The prefix is past the hash: hash up to it (or as far as the store holds), once
        any catch-up under way has ended."""
        inline = active.inline
        assert inline is not None
        while True:
            running = active.catch_up
            if running is not None and not running.done():
                await asyncio.wait([running])
                continue
            if active.forgotten or inline.position >= active.session.received.contiguous_end():
                return
            task = active.catch_up = self._spawn(self._catch_up(active, fence, recorded))
            await asyncio.wait([task])
            return

    async def _catch_up(
        self, active: ActiveUpload, fence: HeldClaim | None, recorded: tuple[int, int] | None
    ) -> None:
        session, inline = active.session, active.inline
        assert inline is not None
        try:
            while session.state is UploadState.RECEIVING and not active.forgotten:
                start, hasher = inline.current()
                end = session.received.contiguous_end()
                if end <= start:
                    return
                async with self._read_buffers().borrow() as buffer:
                    reached = await asyncio.to_thread(
                        self._hash_held, session.id, hasher, start, end, buffer
                    )
                if reached <= start or active.forgotten:
                    return  # not held here: finishing reads them from the finished blob
                self.hashed_bytes += reached - start
                if fence is not None and recorded is not None:
                    # Raises if the claim the record was made under no longer counts: then
                    # the hash does not move, in memory or in the session.
                    await self.sessions.record_received(
                        session.id, *recorded, expires=session.expires, fence=fence
                    )
                state = hasher.state()  # before the writers may feed it
                if not inline.advance(start, reached, hasher):
                    continue  # a writer moved the hash meanwhile
                await persist(self.sessions, active, hashed_offset=reached, hash_state=state)
                self.let_go(session.id, reached)
        except (FreightError, OSError) as exc:
            log.info("upload %s: hashing held bytes stopped: %s", session.id, exc)

    def _hash_held(
        self, upload_id: str, hasher: StatefulSha256, start: int, end: int, buffer: bytearray
    ) -> int:
        """In a worker thread: hash from ``start`` towards ``end`` while the store has the
        bytes; returns where it stopped."""
        reader = self.store.open_held_reader(upload_id)
        view = memoryview(buffer)
        position = start
        try:
            while position < end:
                got = reader.read_into(position, view[: min(len(view), end - position)])
                if got <= 0:
                    break
                hasher.update(view[:got])
                position += got
        finally:
            reader.close()
        return position
