"""The running SHA-256 that trails the writers.

Once bytes of an upload's contiguous prefix are recorded, a background task hashes them
from the page cache they were just written to: each byte once, in one worker thread at a
time, :data:`HASH_STEP` bytes per step, waking writers that wait for it at each step.
Receiving never waits for hashing unless the hash falls too far behind (the engine's
``hash_lag``); finishing then hashes only what is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine

from freight.core.buffers import ReadBuffers
from freight.core.claims import ActiveUpload, save_active
from freight.core.hashing import StatefulSha256, new_sha256, sha256_from_state
from freight.core.ports import PartFile, UploadStore
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
    """Hashes what writers recorded, behind them; settles the digest at finish."""

    def __init__(self, store: UploadStore, read_buffers: ReadBuffers, spawn: Spawn) -> None:
        self.store = store
        self.read_buffers = read_buffers
        self._spawn = spawn

    async def caught_up(self, active: ActiveUpload) -> UploadSession:
        """The session once the running hash covers every byte of its contiguous prefix."""
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

    def maybe_catch_up(self, active: ActiveUpload) -> None:
        """Hash received bytes from the file, behind the writers.

        Bytes are read back from the page cache they were just written to, each byte once,
        in one worker thread at a time; finishing then hashes only what is left.
        """
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
                await save_active(self.store, active)
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
        part = self.store.open_part(session)
        try:
            hash_file_range(part, hasher, start, end, buffer)
        finally:
            part.close()

    async def final_digest(
        self, active: ActiveUpload, expected: str | None, *, always: bool
    ) -> str | None:
        """The finished upload's SHA-256 (None if not ``always`` and none is ``expected``),
        once the catch-up under way ends; refuses one other than ``expected``."""
        if active.catch_up is not None:
            with contextlib.suppress(Exception):
                await active.catch_up
        digest = None
        if always or expected is not None:
            digest = await self.settle(active)
        check_expected(digest, expected)
        return digest

    async def settle(self, active: ActiveUpload) -> str:
        """The upload's SHA-256; a read buffer is waited for only if bytes must be read."""
        session = active.session
        if active.hasher is not None and session.hashed_offset >= (session.length or 0):
            return await asyncio.to_thread(self._hash_remaining, active, None)
        async with self.read_buffers.borrow() as buffer:
            return await asyncio.to_thread(self._hash_remaining, active, buffer)

    def _hash_remaining(self, active: ActiveUpload, buffer: bytearray | None) -> str:
        """Bring the running SHA-256 to the end of the upload, reading only unhashed bytes."""
        session = active.session
        length = session.length or 0
        hasher = active.hasher
        if hasher is None:
            hasher, session.hashed_offset = new_sha256(), 0
        if session.hashed_offset < length:
            assert buffer is not None, "reading needs a buffer"
            part = active.part or self.store.open_part(session)
            try:
                hash_file_range(part, hasher, session.hashed_offset, length, buffer)
            finally:
                if part is not active.part:
                    part.close()
        session.hashed_offset = length
        session.hash_state = hasher.state()
        active.hasher = hasher
        return hasher.hexdigest()


def pulse(active: ActiveUpload) -> None:
    """Wake whoever waits for the hash to move (see ``UploadEngine.hash_progress``)."""
    moved, active.hash_moved = active.hash_moved, asyncio.Event()
    moved.set()


async def stop_hashing(active: ActiveUpload) -> None:
    """Let a running catch-up end without saving, before the upload's rows go."""
    active.forgotten = True
    if active.catch_up is not None:
        with contextlib.suppress(Exception):
            await active.catch_up


def restore_hasher(session: UploadSession) -> StatefulSha256 | None:
    if session.hash_state is not None:
        restored = sha256_from_state(session.hash_state)
        if restored is not None:
            return restored
    if session.hashed_offset == 0:
        return new_sha256()
    # The saved state cannot be used here; the hash is rebuilt from disk at finish.
    session.hashed_offset = 0
    return new_sha256()


def hash_file_range(
    part: PartFile, hasher: StatefulSha256, start: int, end: int, buffer: bytearray
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
