"""Streaming one request's bytes into an upload: the hot path of every protocol.

Bytes are copied into one of two reused buffers. A full buffer goes to a worker thread that
writes it at its offset (and feeds a request checksum, if the client sent one), while the
event loop fills the other buffer from the socket: reading and writing overlap, and memory
stays at two buffers per writer whatever the file size. The worker thread that wrote a
buffer feeds it to the upload's running SHA-256 (:mod:`freight.core.inline_hash`) when it
continues the hashed prefix, while the bytes are still in the CPU's cache; what no writer
fed (spliced bytes, ranges out of order) the engine hashes from the page cache behind the
writers, and a writer only waits for that when it falls too far behind.

A byte is recorded as received (and so acknowledged to clients) only after the sync the
fsync policy asks for. ``commit`` records the whole request; ``abort`` keeps whatever was
made durable before a dropped connection, unless the request carried a checksum, in which
case nothing of it counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from dataclasses import dataclass
from typing import Any

from freight._types import Buffer
from freight.config import FsyncPolicy
from freight.core.blobs import BlobWriter, ClaimsAhead, PipeTarget, SyncsThrough
from freight.core.pipes import splicing_available
from freight.core.ports import HeldClaim
from freight.core.session import UploadSession
from freight.core.writer_host import WriterHost, WrittenUpload
from freight.errors import ChecksumMismatch, FreightError, LengthMismatch, UploadTooLarge

__all__ = ["RequestChecksum", "UploadWriter"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RequestChecksum:
    """A checksum the client sent for this request's body (tus checksum extension)."""

    algorithm: str
    expected: bytes
    hasher: Any  # a fresh hashlib object for ``algorithm``


class UploadWriter:
    """Writes bytes from ``start`` onwards; use as ``async with engine.writer(...) as w``."""

    def __init__(
        self,
        engine: WriterHost,
        active: WrittenUpload,
        part: BlobWriter,
        start: int,
        limit: int | None,
        checksum: RequestChecksum | None,
        *,
        all_or_nothing: bool = False,
        fence: HeldClaim | None = None,
        hash_inline: bool = True,
    ) -> None:
        self._engine = engine
        # Feed the running hash from the buffers written (where the hash stands at their
        # offset); without, the hash follower reads them back (tests of the follower).
        self._hash_inline = hash_inline
        self._joined = False  # waited (or had no need to wait) for the hash to reach us
        self._fed_to = start  # bytes offered to the running hash end here (set in threads)
        self._fence = fence  # the claim this writer holds: its records count only under it
        self._active = active
        self._part = part
        self._start = start
        self._limit = limit
        if limit is not None and isinstance(part, ClaimsAhead):
            part.claim_within(limit)
        self._checksum = checksum
        # A pending checksum makes a request count whole or not at all, as do callers
        # whose unit is a chunk (a half-kept chunk would be neither missing nor received).
        self._all_or_nothing = all_or_nothing or checksum is not None
        self._policy = engine.fsync
        self._buffers = engine.buffers.acquire()
        self._views = (memoryview(self._buffers[0]), memoryview(self._buffers[1]))
        self._buffer_size = len(self._buffers[0])
        self._current = 0
        self._fill = 0
        self._handed_off = start  # bytes given to the worker so far end here
        self._flushed = start  # bytes written (and hashed) end here
        self._pending: asyncio.Future[int] | None = None
        self._checkpoint: asyncio.Task[None] | None = None
        self._recorded = start
        # Where the last checkpoint was asked to reach: on a store that makes only part of
        # it durable mid-request (SyncsThrough), ``_recorded`` trails it.
        self._asked = start
        self._closed = False
        self._keep_below: int | None = None  # set when a newer request takes over

    @property
    def position(self) -> int:
        """Offset just past the last byte accepted by :meth:`write`."""
        return self._handed_off + self._fill

    @property
    def start(self) -> int:
        return self._start

    @property
    def limit(self) -> int | None:
        """Offset the writer may not write past (the upload's length or the range's end)."""
        return self._limit

    @property
    def unrecorded(self) -> int:
        """Bytes already in the file that this writer has not recorded as received."""
        return self._flushed - self._recorded

    async def write(self, data: Buffer) -> None:
        """Take all of ``data``, waiting while both buffers are busy.

        Returns with room in the filling buffer, so a socket may read into it next.
        """
        view = memoryview(data).cast("B")
        self._check_room(view.nbytes)
        while view.nbytes:
            view = view[self.write_nowait(view) :]
            if view.nbytes or self.is_full:
                await self.hand_off()

    def write_nowait(self, data: Buffer) -> int:
        """Copy as much of ``data`` as fits without waiting; returns how many bytes it took.

        A full buffer goes to the worker threads at once if the other one is free; copying
        stops where it is not.
        """
        view = memoryview(data).cast("B")
        self._check_room(view.nbytes)
        taken = 0
        while taken < view.nbytes:
            if self.is_full and not self.hand_off_nowait():
                break
            take = min(self._buffer_size - self._fill, view.nbytes - taken)
            # Through a memoryview: assigning a view into a bytearray slice copies it twice.
            self._views[self._current][self._fill : self._fill + take] = view[taken : taken + take]
            self._fill += take
            taken += take
        if self.is_full:
            self.hand_off_nowait()
        return taken

    @property
    def can_splice(self) -> bool:
        """Whether bytes may go from a socket to the file without passing through Python."""
        # A request checksum needs to see the bytes, as does a running hash that only the
        # writers feed (no follower reads back what they leave).
        inline = self._active.inline
        no_hashing = self._checksum is None and (inline is None or inline.followed)
        return no_hashing and splicing_available() and isinstance(self._part, PipeTarget)

    @property
    def fsync(self) -> FsyncPolicy:
        return self._policy

    @property
    def part(self) -> BlobWriter:
        """The file written, for :meth:`placed` callers that write it themselves."""
        return self._part

    async def settle(self) -> None:
        """Write out whatever is staged and wait for it: the file then ends at :attr:`position`."""
        await self._drain()

    def placed(self, end: int) -> None:
        """Bytes up to ``end`` were written into the file by the caller itself (``splice``).

        Only after :meth:`settle`, with nothing staged since. They count as flushed, and
        are recorded at the next checkpoint like any others.
        """
        if self._fill or (self._pending is not None and not self._pending.done()):
            raise RuntimeError("bytes are staged: settle() first")
        self._check_room(end - self._handed_off)
        self._handed_off = end
        self._advance(end)
        self._maybe_checkpoint()

    def hash_trails(self, position: int) -> bool:
        """Whether writing should wait for the upload's hash before going past ``position``."""
        return self._engine.hash_trails(self._active, self._start, position)

    async def let_hash_near(self, position: int) -> None:
        """Wait for the recording and hashing under way while the hash trails ``position``."""
        while self.hash_trails(position):
            catch_up = self._active.catch_up
            if catch_up is not None and not catch_up.done():
                await self._engine.hash_progress(self._active)
            elif self._checkpoint is not None and not self._checkpoint.done():
                await asyncio.wait([self._checkpoint])  # recording lets the hash go on
            else:
                return  # nothing under way would bring the hash closer

    def _check_room(self, nbytes: int) -> None:
        if self._limit is not None and self.position + nbytes > self._limit:
            raise UploadTooLarge(f"the body runs past the upload's length of {self._limit} bytes")

    def free_space(self) -> memoryview:
        """The unfilled part of the filling buffer, for a socket to read straight into.

        Empty once the buffer is full: :meth:`hand_off_nowait` (or :meth:`write`) makes
        room. Never reaches past the upload's length.
        """
        room = self._buffer_size - self._fill
        if self._limit is not None:
            room = min(room, self._limit - self.position)
        return self._views[self._current][self._fill : self._fill + room]

    def filled(self, nbytes: int) -> None:
        """Count ``nbytes`` put at the start of :meth:`free_space` as written."""
        if nbytes > self._buffer_size - self._fill:
            raise ValueError("more bytes than the free space holds")
        self._fill += nbytes

    @property
    def is_full(self) -> bool:
        return self._fill == self._buffer_size

    def hand_off_nowait(self) -> bool:
        """Pass the filling buffer to the worker threads unless the other one is still busy.

        Returns False, doing nothing, while the previous buffer is being written; the
        caller then waits (:meth:`hand_off`) instead of reading more. Raises what a
        finished job raised.
        """
        if self._pending is not None and not self._pending.done():
            return False
        self._hand_off_settled()
        return True

    async def commit(self, *, expected_end: int | None = None) -> UploadSession:
        """Make every byte of this request durable and record it; returns the session."""
        await self._drain()
        if expected_end is not None and self._flushed != expected_end:
            raise LengthMismatch(
                f"expected the body to end at byte {expected_end}, it ended at {self._flushed}"
            )
        if self._checksum is not None:
            digest = self._checksum.hasher.digest()
            if not hmac.compare_digest(digest, self._checksum.expected):
                raise ChecksumMismatch(
                    f"the body does not match its {self._checksum.algorithm} checksum"
                )
        await self._sync_and_record(self._flushed)
        self._closed = True
        return self._active.session

    async def checkpoint(self) -> int:
        """Make everything written so far durable and recorded now; returns the durable end.

        Streaming transports call this to acknowledge a window without ending the writer.
        An all-or-nothing writer records nothing before :meth:`commit`.
        """
        await self._drain()
        if not self._all_or_nothing:
            await self._sync_and_record(self._flushed)
        return self._recorded

    def release_buffers(self) -> None:
        """Give the staging buffers back; only once no job can touch them (after abort)."""
        if self._pending is None or self._pending.done():
            self._engine.buffers.release(self._buffers)
        else:
            self._engine.buffers.discard(self._buffers)

    def yield_from(self, offset: int) -> None:
        """A newer request takes this one over from ``offset``: bytes from there are its
        to write and record, so this writer records none of them, even on its way out.

        Recording them would move the upload past the offset the newer request was
        started at (what the client last heard), and refuse it."""
        self._keep_below = offset if self._keep_below is None else min(self._keep_below, offset)

    async def abort(self) -> None:
        """Keep what arrived before a failure, unless the writer is all-or-nothing."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            await self._drain()
        if self._checkpoint is not None:
            with contextlib.suppress(Exception):
                await self._checkpoint
        try:
            if not self._all_or_nothing and self._flushed > self._recorded:
                await self._sync_and_record(self._flushed)
        except FreightError as exc:
            log.warning(
                "upload %s: could not keep bytes after a failure: %s", self._active.session.id, exc
            )
        finally:
            inline = self._active.inline
            if inline is not None and max(self._flushed, self._fed_to) > self._recorded:
                inline.rewind()  # it may have hashed bytes that do not count

    # internals ---------------------------------------------------------------------------

    async def hand_off(self) -> None:
        """Pass the filling buffer on once the previous one is written; raises its error."""
        if self._pending is not None:
            await asyncio.wait([self._pending])
        self._hand_off_settled()

    def _hand_off_settled(self) -> None:
        self._advance(self._take_settled())
        self._maybe_checkpoint()
        if self._fill == 0:
            return
        size, at = self._fill, self._handed_off
        self._pending = self._start_jobs(self._current, size, at)
        self._handed_off += size
        self._current ^= 1
        self._fill = 0

    def _advance(self, flushed: int) -> None:
        if flushed > self._flushed:
            self._engine.note_written(self._active, flushed - self._flushed)
            self._flushed = flushed

    def _take_settled(self) -> int:
        """The end written by the finished previous job (or the flushed end if none ran)."""
        if self._pending is None:
            return self._flushed
        pending, self._pending = self._pending, None
        try:
            return pending.result()
        except BaseException:
            # Bytes staged after the failed buffer would land at the wrong offset: drop them.
            self._handed_off = self._flushed
            self._fill = 0
            raise

    async def _drain(self) -> None:
        await self.hand_off()
        if self._pending is not None:
            await asyncio.wait([self._pending])
        self._advance(self._take_settled())
        if self._checkpoint is not None:
            await self._checkpoint

    def _start_jobs(self, slot: int, size: int, at: int) -> asyncio.Future[int]:
        """Write the buffer in a worker thread, and feed the request checksum in another.

        The job counts as done only once the upload's hash trails it by no more than the
        engine allows, so a hash slower than the network holds the reading back.
        """
        if self._joins_hash(size, at):
            return asyncio.ensure_future(self._jobs_after_hash(slot, size, at))
        return self._start_jobs_now(slot, size, at)

    def _joins_hash(self, size: int, at: int) -> bool:
        """Whether to let the hash reach ``at`` before writing there, so this writer feeds
        it from then on: once per writer, on a full buffer (a tail or a few bytes before
        a splice are not worth holding the request for)."""
        if self._joined or not self._hash_inline or size < self._buffer_size:
            return False
        self._joined = True
        return self._engine.hash_joins(self._active, at)

    async def _jobs_after_hash(self, slot: int, size: int, at: int) -> int:
        await self._engine.hash_reach(self._active, at)
        return await self._start_jobs_now(slot, size, at)

    def _start_jobs_now(self, slot: int, size: int, at: int) -> asyncio.Future[int]:
        loop = asyncio.get_running_loop()
        write = loop.run_in_executor(None, self._write_job, slot, size, at)
        jobs: list[asyncio.Future[Any]] = [write]
        if self._checksum is not None:
            jobs.append(loop.run_in_executor(None, self._hash_job, self._buffers[slot], size))
        trails = self.hash_trails(at + size)
        if len(jobs) == 1 and not trails:
            return write
        return asyncio.ensure_future(self._all_of(jobs, at + size if trails else None))

    async def _all_of(self, jobs: list[asyncio.Future[Any]], hashed_near: int | None) -> int:
        # Wait for every job even when one fails: the buffer is reused only once no thread
        # reads it any more.
        outcomes = await asyncio.gather(*jobs, return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        if hashed_near is not None:
            await self.let_hash_near(hashed_near)
        end = outcomes[0]
        assert isinstance(end, int)
        return end

    def _write_job(self, slot: int, size: int, at: int) -> int:
        self._part.write_at(at, self._views[slot][:size])
        inline = self._active.inline
        if inline is not None and (self._hash_inline or not inline.followed):
            self._fed_to = at + size  # before: a failing feed may have hashed some
            inline.feed(at, self._views[slot][:size])
        if self._policy is FsyncPolicy.ALWAYS:
            self._part.sync()
        return at + size

    def _hash_job(self, buffer: bytearray, size: int) -> None:
        assert self._checksum is not None
        self._checksum.hasher.update(memoryview(buffer)[:size])

    def _maybe_checkpoint(self) -> None:
        """Record progress every ``sync_every`` bytes, syncing off the event loop."""
        if self._all_or_nothing:
            return
        if self._checkpoint is not None and not self._checkpoint.done():
            return
        if self._flushed - max(self._recorded, self._asked) < self._engine.sync_every:
            return
        self._asked = self._flushed
        self._checkpoint = asyncio.ensure_future(
            self._sync_and_record(self._flushed, mid_request=True)
        )
        # Its failure reaches the request when the request next waits for it; a request
        # that ends another way must not leave asyncio to log it as never retrieved.
        self._checkpoint.add_done_callback(_retrieve)

    async def _sync_and_record(self, end: int, *, mid_request: bool = False) -> None:
        """Make bytes up to ``end`` durable and record them. ``mid_request`` (a checkpoint
        of its own, the request goes on) records only what the store makes durable
        cheaply (:class:`SyncsThrough`); the request's end makes the rest durable."""
        if end <= self._recorded:
            return
        if self._policy is not FsyncPolicy.NEVER:
            if mid_request and isinstance(self._part, SyncsThrough):
                end = await asyncio.to_thread(self._part.sync_through, self._recorded, end)
                if end <= self._recorded:
                    return
            elif isinstance(self._part, SyncsThrough):
                await asyncio.to_thread(self._part.sync_range, self._recorded, end)
            else:
                await asyncio.to_thread(self._part.sync)
        if self._keep_below is not None:
            end = min(end, self._keep_below)  # taken over meanwhile: see yield_from()
            if end <= self._recorded:
                return
        # Advance first: the progress event published while recording must not count these
        # bytes both as received and as still unrecorded.
        start, self._recorded = self._recorded, end
        try:
            await self._engine.record_received(self._active, start, end, self._fence)
        except BaseException:
            self._recorded = start
            raise


def _retrieve(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()
