"""The running SHA-256 of every upload, whichever blob store holds its bytes.

Where the store can read back what was just written cheaply (:class:`ReadBack`: the page
cache of a local disk), the hash trails the writers: once bytes of the contiguous prefix
are recorded, a background task hashes them, each byte once, in one worker thread that
goes on as further bytes are recorded (up to :data:`CATCH_UP_RUN` bytes, then the state is
saved with the session), telling the event loop at each :data:`HASH_STEP` so that writers
waiting for the hash wake.
Receiving never waits for hashing unless the hash falls too far behind (the engine's
``hash_lag``), which is what lets bytes go from socket to file without passing through
Python.

Bytes that pass through a writer's buffers anyway (WebSocket frames, bodies not spliced)
are cheaper to hash there, from the buffer just written, than to read back: the running
hash is an :class:`InlineHash` that such writers feed when their bytes continue it, and the
background task hashes only what no writer fed, from where the hash stands
(:meth:`InlineHash.follow`). A writer that joins behind the hash waits, on its first full
buffer, for the task to reach it (:meth:`HashFollower.reach`) when the gap is small.

Elsewhere (an object store) the writers hash contiguous bytes as they pass
(:mod:`freight.core.inline_hash`) and the state at each recorded offset is saved with the
session; bytes that arrived out of order are hashed when the prefix before them completes
(:mod:`freight.core.held_hash`). Either way finishing hashes only what is left, reading it
from the finished blob.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import sys
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor

from freight.core.active_upload import ActiveUpload, persist
from freight.core.blobs import BlobReader, BlobStore, HeldRanges, ReadBack
from freight.core.buffers import ReadBuffers
from freight.core.hashing import StatefulSha256, new_sha256, sha256_from_state
from freight.core.held_hash import HeldHashing
from freight.core.inline_hash import InlineHash
from freight.core.ports import HeldClaim, SessionRepository
from freight.core.read_back import Run, check_expected, follow_stored, hash_file_range
from freight.core.session import UploadSession, UploadState
from freight.errors import FreightError

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
# One worker thread hashes up to this much before the state is saved with the session.
CATCH_UP_RUN = 64 * 1024 * 1024
# A writer that would feed the hash waits for it to read back a gap up to this wide before
# its first bytes (a resume after a crash, say); behind a wider one it leaves its bytes to
# be read back as well, rather than hold its client up that long.
JOIN_GAP = 64 * 1024 * 1024
# The thread reads through a borrowed read buffer (256 KiB), which stays in the CPU's
# cache: hashing 1 GiB from the page cache took 0.71-0.77 CPU-s that way (1 MiB: 0.70-0.72),
# 0.83-0.99 through 8-32 MiB buffers and 0.87-0.92 through an mmap of each step (its page
# faults cost more than the copy they save), against 0.55 for the hash alone.

# Hashing threads run at this niceness (Linux: per thread): the bytes being received (the
# client, the splice) get the CPU first, and the hash catches up in what is left over.
HASH_NICENESS = 10
# Threads that hash at once, whichever uploads they follow.
HASH_THREADS = max(2, os.cpu_count() or 2)

Spawn = Callable[[Coroutine[object, object, None]], "asyncio.Task[None]"]


def _lower_priority() -> None:
    """In each new hashing thread: yield the CPU to the receiving threads (best effort)."""
    if sys.platform == "linux":
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HASH_NICENESS)


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
        self._runs: dict[str, Run] = {}
        self.enabled = enabled
        self._spawn = spawn
        self.held = (
            HeldHashing(sessions, blobs, lambda: self.read_buffers, spawn)
            if self.read_back is None and isinstance(blobs, HeldRanges)
            else None
        )
        self.settled_bytes = 0  # read back at finish (a counter)
        self.followed_bytes = 0  # read back from the page cache while receiving (a counter)
        # Its own threads: a thread's niceness stays with it, and cannot be raised again
        # without privilege, so a shared pool's threads must never be lowered.
        self._threads = ThreadPoolExecutor(
            HASH_THREADS, thread_name_prefix="freight-hash", initializer=_lower_priority
        )

    def close(self) -> None:
        """Let the hashing threads go (any step still running ends by itself)."""
        self._threads.shutdown(wait=False)

    async def _in_thread(self, work: Callable[[], object]) -> None:
        await asyncio.get_running_loop().run_in_executor(self._threads, work)

    def restore(self, active: ActiveUpload) -> None:
        """Give an upload just brought into memory its running hash, as saved."""
        if not self.enabled or active.session.state is UploadState.FINISHED:
            return
        hasher = restore_hasher(active.session)
        on_feed = None
        if self.held is not None:
            on_feed = functools.partial(self.held.let_go, active.session.id)
        active.inline = InlineHash(
            hasher, active.session.hashed_offset, on_feed, followed=self.read_back is not None
        )

    async def caught_up(self, active: ActiveUpload) -> UploadSession:
        """The session once the running hash covers every byte it can follow."""
        while active.catch_up is not None and not active.catch_up.done():
            await asyncio.wait([active.catch_up])
        return active.session

    async def progress(self, active: ActiveUpload) -> None:
        """Wait for the running hash to take its next step (at once if it is not running)."""
        if active.catch_up is not None and not active.catch_up.done():
            await active.hash_moved.wait()

    async def reach(self, active: ActiveUpload, position: int) -> None:
        """Let the hash read back what it trails recorded bytes by, up to ``position``,
        so that a writer from there may feed it: at once if nothing can bring it there."""
        inline = active.inline
        while self.read_back is not None and inline is not None and inline.position < position:
            if active.session.received.contiguous_end() < position:
                return
            self.maybe_catch_up(active)
            catch_up = active.catch_up
            if catch_up is None or catch_up.done():
                return
            moved_from = inline.position
            await active.hash_moved.wait()
            if catch_up.done() and inline.position == moved_from:
                return  # it stopped without moving (a read failed): the writer goes on

    def joins_at(self, active: ActiveUpload, position: int) -> bool:
        """Whether a writer about to write at ``position`` should wait for the hash to
        reach it first (:meth:`reach`), rather than leave all its bytes to be read back."""
        inline = active.inline
        if self.read_back is None or inline is None:
            return False
        behind = position - inline.position
        return 0 < behind <= JOIN_GAP and active.session.received.contiguous_end() >= position

    def trails(self, active: ActiveUpload, start: int, position: int, lag: int) -> bool:
        """Whether a writer from ``start`` now at ``position`` should wait for the hash.

        Only a writer the hash can follow (one that continues the contiguous prefix) waits,
        and only while the hash trails it by more than ``lag``.
        """
        inline = active.inline
        if self.read_back is None or inline is None:
            return False
        if active.session.received.contiguous_end() < start:
            return False
        return position - inline.position > lag

    async def after_record(
        self,
        active: ActiveUpload,
        fence: HeldClaim | None = None,
        recorded: tuple[int, int] | None = None,
    ) -> None:
        """Bytes (``recorded``, under ``fence``) were just recorded: hash them from the
        store, or save the inline state and hash what arrived out of order before them."""
        inline = active.inline
        if inline is None:
            return
        contiguous = active.session.received.contiguous_end()
        reached = inline.recorded(contiguous)
        if self.read_back is not None:
            if reached is not None and not active.forgotten:
                position, hasher = reached
                await persist(
                    self.sessions, active, hashed_offset=position, hash_state=hasher.state()
                )
            self.maybe_catch_up(active)
            return
        if reached is not None and not active.forgotten:
            position, hasher = reached
            await persist(self.sessions, active, hashed_offset=position, hash_state=hasher.state())
            if self.held is not None:
                self.held.let_go(active.session.id, position)
        if self.held is not None and inline.position < contiguous:
            await self.held.follow(active, fence, recorded)

    def maybe_catch_up(self, active: ActiveUpload) -> None:
        """Hash received bytes read back from the store, behind the writers."""
        session = active.session
        if session.state is not UploadState.RECEIVING:
            return
        inline = active.inline
        if inline is None or self.read_back is None:
            return
        end = session.received.contiguous_end()
        if active.catch_up is not None and not active.catch_up.done():
            if (run := self._runs.get(session.id)) is not None:
                run.end = max(run.end, end)  # the thread under way goes on to here
            return
        if end > inline.position:
            active.catch_up = self._spawn(self._catch_up(active, inline))

    async def _catch_up(self, active: ActiveUpload, inline: InlineHash) -> None:
        session = active.session
        try:
            while session.state is UploadState.RECEIVING and not active.forgotten:
                start, end = inline.position, session.received.contiguous_end()
                if end <= start:
                    return
                if not await self._hash_steps(active, inline, start, end):
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
        self, active: ActiveUpload, inline: InlineHash, start: int, end: int
    ) -> bool:
        """Hash from ``start`` on, in one worker thread, to ``end`` or as far as recording
        moves it meanwhile (at most :data:`CATCH_UP_RUN` bytes); waiting writers see each
        step as the thread reports it."""
        session = active.session
        run = Run(session.id, end)
        self._runs[session.id] = run
        loop = asyncio.get_running_loop()

        def report(position: int, state: bytes | None) -> None:  # in the thread
            loop.call_soon_threadsafe(self._stepped, active, run, position, state)

        try:
            async with self.read_buffers.borrow() as buffer:
                await self._in_thread(
                    functools.partial(self._hash_run, run, inline, start, buffer, report)
                )
        except (FreightError, OSError) as exc:
            # Each piece moved the hash only once read whole: it stands where it got to.
            log.info("upload %s: hashing from disk stopped: %s", session.id, exc)
            return False
        finally:
            run.stopped = True
            self.followed_bytes += run.followed
            if self._runs.get(session.id) is run:
                del self._runs[session.id]
        return not active.forgotten

    def _stepped(self, active: ActiveUpload, run: Run, position: int, state: bytes | None) -> None:
        """In the event loop: the running hash reached ``position``."""
        if active.forgotten:
            run.stopped = True
            return
        session = active.session
        if position > session.hashed_offset:
            session.hashed_offset, session.hash_state = position, state
            pulse(active)

    def _hash_run(
        self,
        run: Run,
        inline: InlineHash,
        start: int,
        buffer: bytearray,
        report: Callable[[int, bytes | None], None],
    ) -> None:
        """In a worker thread: a step at a time until the run's end (which may move), or
        until a writer feeds the hash (it then stands past where this run reads)."""
        assert self.read_back is not None
        part = self.read_back.open_part_reader(run.upload_id)
        try:
            position, limit = start, start + CATCH_UP_RUN
            while not run.stopped and (end := min(run.end, limit)) > position:
                step_end = min(end, position + HASH_STEP)
                if not self._hash_stored(part, inline, position, step_end, buffer, run):
                    return
                position = step_end
                reached = inline.settle(position)
                if reached is None:
                    return
                report(position, reached[1].state())
        finally:
            part.close()

    def _hash_stored(
        self,
        part: BlobReader,
        inline: InlineHash,
        start: int,
        end: int,
        buffer: bytearray,
        run: Run,
    ) -> bool:
        return follow_stored(part, inline, start, end, buffer, run)

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
            self.settled_bytes += length - position
            if self.read_back is not None:
                reader = await asyncio.to_thread(self.read_back.open_part_reader, session.id)
            else:
                reader = await self.blobs.open_reader(session.id)
            try:
                async with self.read_buffers.borrow() as buffer:
                    await self._in_thread(
                        functools.partial(hash_file_range, reader, hasher, position, length, buffer)
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
