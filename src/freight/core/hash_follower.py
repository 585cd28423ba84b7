"""The running SHA-256 of every upload, whichever blob store holds its bytes.

Where the store can read back what was just written cheaply (:class:`ReadBack`: the page
cache of a local disk), the hash trails the writers: once bytes of the contiguous prefix
are recorded, a background task hashes them, each byte once, in one worker thread at a
time, :data:`HASH_STEP` bytes per step, waking writers that wait for it at each step.
Receiving never waits for hashing unless the hash falls too far behind (the engine's
``hash_lag``), which is what lets bytes go from socket to file without passing through
Python.

Elsewhere (an object store) the writers hash contiguous bytes as they pass
(:mod:`freight.core.inline_hash`) and the state at each recorded offset is saved with the
session. Either way finishing hashes only what is left, reading it from the finished blob.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine

from freight.core.active_upload import ActiveUpload, persist
from freight.core.blobs import BlobReader, BlobStore, ReadBack
from freight.core.buffers import ReadBuffers
from freight.core.hashing import StatefulSha256, new_sha256, sha256_from_state
from freight.core.inline_hash import InlineHash
from freight.core.ports import SessionRepository
from freight.core.session import UploadSession, UploadState
from freight.errors import ChecksumMismatch, FreightError, UploadIncomplete

__all__ = [
    "HASH_STEP",
    "HashFollower",
    "check_expected",
    "hash_file_range",
    "pulse",
    "restore_hasher",
    "stop_hashing",
]

# The engine's log lines keep the engine's logger, whichever of its modules writes them.
log = logging.getLogger("freight.core.engine")

# The running hash reads back this much at a time, then tells waiting writers it moved.
HASH_STEP = 8 * 1024 * 1024

Spawn = Callable[[Coroutine[object, object, None]], "asyncio.Task[None]"]


class HashFollower:
    """Keeps each upload's running hash; settles the digest at finish."""

    def __init__(
        self,
        sessions: SessionRepository,
        blobs: BlobStore,
        read_buffers: ReadBuffers,
        spawn: Spawn,
        *,
        enabled: bool,
    ) -> None:
        self.sessions = sessions
        self.blobs = blobs
        self.read_back = blobs if isinstance(blobs, ReadBack) else None
        self.read_buffers = read_buffers
        self.enabled = enabled
        self._spawn = spawn

    def restore(self, active: ActiveUpload) -> None:
        """Give an upload just brought into memory its running hash, as saved."""
        if not self.enabled or active.session.state is UploadState.FINISHED:
            return
        hasher = restore_hasher(active.session)
        if self.read_back is not None:
            active.hasher = hasher
        else:
            active.inline = InlineHash(hasher, active.session.hashed_offset)

    async def caught_up(self, active: ActiveUpload) -> UploadSession:
        """The session once the running hash covers every byte it can follow."""
        while active.catch_up is not None and not active.catch_up.done():
            await asyncio.wait([active.catch_up])
        return active.session

    async def progress(self, active: ActiveUpload) -> None:
        """Wait for the running hash to take its next step (at once if it is not running)."""
        if active.catch_up is not None and not active.catch_up.done():
            await active.hash_moved.wait()

    def trails(self, active: ActiveUpload, start: int, position: int, lag: int) -> bool:
        """Whether a writer from ``start`` now at ``position`` should wait for the hash.

        Only a writer the hash can follow (one that continues the contiguous prefix) waits,
        and only while the hash trails it by more than ``lag``.
        """
        session = active.session
        if active.hasher is None or session.received.contiguous_end() < start:
            return False
        return position - session.hashed_offset > lag

    async def after_record(self, active: ActiveUpload) -> None:
        """Bytes were just recorded: hash them from the store, or save the inline state."""
        if active.inline is None:
            self.maybe_catch_up(active)
            return
        reached = active.inline.recorded(active.session.received.contiguous_end())
        if reached is not None and not active.forgotten:
            position, hasher = reached
            await persist(self.sessions, active, hashed_offset=position, hash_state=hasher.state())

    def maybe_catch_up(self, active: ActiveUpload) -> None:
        """Hash received bytes read back from the store, behind the writers."""
        session = active.session
        if not active.hash_is_free or session.state is not UploadState.RECEIVING:
            return
        if session.received.contiguous_end() <= session.hashed_offset:
            return
        active.catch_up = self._spawn(self._catch_up(active))

    async def _catch_up(self, active: ActiveUpload) -> None:
        session, hasher = active.session, active.hasher
        assert hasher is not None
        try:
            while session.state is UploadState.RECEIVING and not active.forgotten:
                start, end = session.hashed_offset, session.received.contiguous_end()
                if end <= start:
                    return
                if not await self._hash_steps(active, hasher, start, end):
                    return
                await persist(
                    self.sessions,
                    active,
                    hashed_offset=session.hashed_offset,
                    hash_state=session.hash_state,
                )
        finally:
            pulse(active)

    async def _hash_steps(
        self, active: ActiveUpload, hasher: StatefulSha256, start: int, end: int
    ) -> bool:
        """Hash ``[start, end)`` a step at a time, so waiting writers see it move."""
        session = active.session
        for step_start in range(start, end, HASH_STEP):
            step_end = min(end, step_start + HASH_STEP)
            before = hasher.copy()
            try:
                async with self.read_buffers.borrow() as buffer:
                    await asyncio.to_thread(
                        self._hash_stored, session, hasher, step_start, step_end, buffer
                    )
            except (FreightError, OSError) as exc:
                active.hasher = before  # it may have eaten part of the range
                log.info("upload %s: hashing from disk stopped: %s", session.id, exc)
                return False
            if active.forgotten:
                return False
            session.hashed_offset, session.hash_state = step_end, hasher.state()
            pulse(active)
        return True

    def _hash_stored(
        self,
        session: UploadSession,
        hasher: StatefulSha256,
        start: int,
        end: int,
        buffer: bytearray,
    ) -> None:
        assert self.read_back is not None
        part = self.read_back.open_part_reader(session.id)
        try:
            hash_file_range(part, hasher, start, end, buffer)
        finally:
            part.close()

    async def final_digest(
        self, active: ActiveUpload, expected: str | None, *, always: bool
    ) -> str | None:
        """The finished blob's SHA-256 (None if not ``always`` and none is ``expected``),
        once the catch-up under way ends; refuses one other than ``expected``.

        What the running hash has not covered is read once: from the unfinished blob
        where the store reads back cheaply, else from the finished one (so the engine
        finishes the blob first there).
        """
        if active.catch_up is not None:
            with contextlib.suppress(Exception):
                await active.catch_up
        digest = None
        if always or expected is not None:
            digest = await self._settle(active)
        check_expected(digest, expected)
        return digest

    async def _settle(self, active: ActiveUpload) -> str:
        """The upload's SHA-256; reads (with a borrowed buffer) only bytes not hashed yet."""
        session = active.session
        length = session.length or 0
        position, hasher = self._running(active)
        if position < length:
            if self.read_back is not None:
                reader = await asyncio.to_thread(self.read_back.open_part_reader, session.id)
            else:
                reader = await self.blobs.open_reader(session.id)
            try:
                async with self.read_buffers.borrow() as buffer:
                    await asyncio.to_thread(
                        hash_file_range, reader, hasher, position, length, buffer
                    )
            finally:
                reader.close()
        session.hashed_offset, session.hash_state = length, hasher.state()
        active.hasher = hasher
        return hasher.hexdigest()

    def _running(self, active: ActiveUpload) -> tuple[int, StatefulSha256]:
        """Where the upload's running hash stands (a new one from 0 if it has none)."""
        if active.inline is not None:
            return active.inline.current()
        if active.hasher is not None:
            return active.session.hashed_offset, active.hasher
        return 0, new_sha256()


def pulse(active: ActiveUpload) -> None:
    """Wake whoever waits for the hash to move (see ``UploadEngine.hash_progress``)."""
    moved, active.hash_moved = active.hash_moved, asyncio.Event()
    moved.set()


async def stop_hashing(active: ActiveUpload) -> None:
    """Let a running catch-up end without saving, before the upload's records go."""
    active.forgotten = True
    if active.catch_up is not None:
        with contextlib.suppress(Exception):
            await active.catch_up


def restore_hasher(session: UploadSession) -> StatefulSha256:
    if session.hash_state is not None:
        restored = sha256_from_state(session.hash_state)
        if restored is not None:
            return restored
    # No usable saved state: the hash starts over, and finishing reads what it missed.
    session.hashed_offset = 0
    return new_sha256()


def hash_file_range(
    part: BlobReader, hasher: StatefulSha256, start: int, end: int, buffer: bytearray
) -> None:
    view = memoryview(buffer)
    position = start
    while position < end:
        got = part.read_into(position, view[: min(len(view), end - position)])
        if got <= 0:
            raise UploadIncomplete(f"upload data ends early at byte {position}")
        hasher.update(view[:got])
        position += got


def check_expected(digest: str | None, expected: str | None) -> None:
    """Refuse a digest other than the one a client declared (if it declared one)."""
    if expected is not None and digest is not None and digest != expected.lower():
        raise ChecksumMismatch(
            f"the upload's SHA-256 is {digest}, not the expected {expected.lower()}",
            sha256=digest,
        )
