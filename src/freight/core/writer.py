"""Streaming one request's bytes into an upload: the hot path of every protocol.

Bytes are copied into one of two reused buffers. A full buffer goes to a worker thread that
writes it at its offset and feeds the running hashes, while the event loop fills the other
buffer from the socket: reading, writing and hashing overlap, and memory stays at two
buffers per writer whatever the file size.

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
from typing import TYPE_CHECKING, Any

from freight._types import Buffer
from freight.config import FsyncPolicy
from freight.core.hashing import StatefulSha256
from freight.core.session import UploadSession
from freight.errors import ChecksumMismatch, FreightError, LengthMismatch, UploadTooLarge

if TYPE_CHECKING:
    from freight.core.engine import ActiveUpload, UploadEngine
    from freight.storage.base import PartFile

__all__ = ["RequestChecksum", "UploadWriter"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RequestChecksum:
    """A checksum the client sent for this request's body (tus checksum extension)."""

    algorithm: str
    expected: bytes
    hasher: Any  # a fresh hashlib object for ``algorithm``


@dataclass(frozen=True)
class _Mark:
    """A durable point inside the request: bytes up to ``end`` and the hash there."""

    end: int
    hasher: StatefulSha256 | None


class UploadWriter:
    """Writes bytes from ``start`` onwards; use as ``async with engine.writer(...) as w``."""

    def __init__(
        self,
        engine: UploadEngine,
        active: ActiveUpload,
        part: PartFile,
        start: int,
        limit: int | None,
        checksum: RequestChecksum | None,
        hasher: StatefulSha256 | None,
        *,
        all_or_nothing: bool = False,
    ) -> None:
        self._engine = engine
        self._active = active
        self._part = part
        self._start = start
        self._limit = limit
        self._checksum = checksum
        # A pending checksum makes a request count whole or not at all, as do callers
        # whose unit is a chunk (a half-kept chunk would be neither missing nor received).
        self._all_or_nothing = all_or_nothing or checksum is not None
        self._hasher = hasher
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
        self._closed = False
        self._hasher_valid = True

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
        await self._sync_and_record(_Mark(self._flushed, self._hasher))
        self._closed = True
        return self._active.session

    async def checkpoint(self) -> int:
        """Make everything written so far durable and recorded now; returns the durable end.

        Streaming transports call this to acknowledge a window without ending the writer.
        An all-or-nothing writer records nothing before :meth:`commit`.
        """
        await self._drain()
        if not self._all_or_nothing:
            hasher = self._hasher.copy() if self._hasher is not None else None
            await self._sync_and_record(_Mark(self._flushed, hasher))
        return self._recorded

    def release_buffers(self) -> None:
        """Give the staging buffers back; only once no job can touch them (after abort)."""
        if self._pending is None or self._pending.done():
            self._engine.buffers.release(self._buffers)
        else:
            self._engine.buffers.discard(self._buffers)

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
        if self._all_or_nothing or self._flushed <= self._recorded:
            return
        hasher = self._hasher if self._hasher_valid else None
        try:
            await self._sync_and_record(_Mark(self._flushed, hasher))
        except FreightError as exc:
            log.warning(
                "upload %s: could not keep bytes after a failure: %s", self._active.session.id, exc
            )

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
        buffer, size, at = self._buffers[self._current], self._fill, self._handed_off
        self._pending = self._start_jobs(buffer, size, at)
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
            # The hasher may have consumed bytes that never reached the disk.
            self._hasher_valid = False
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

    def _start_jobs(self, buffer: bytearray, size: int, at: int) -> asyncio.Future[int]:
        """Write and hash the buffer in two worker threads at once; both only read it."""
        loop = asyncio.get_running_loop()
        write = loop.run_in_executor(None, self._write_job, buffer, size, at)
        if self._hasher is None and self._checksum is None:
            return write
        hashing = loop.run_in_executor(None, self._hash_job, buffer, size)

        async def both() -> int:
            # Wait for both even when one fails: the buffer is reused only once neither
            # thread reads it any more.
            end, hashed = await asyncio.gather(write, hashing, return_exceptions=True)
            for outcome in (end, hashed):
                if isinstance(outcome, BaseException):
                    raise outcome
            assert isinstance(end, int)
            return end

        return asyncio.ensure_future(both())

    def _write_job(self, buffer: bytearray, size: int, at: int) -> int:
        self._part.write_at(at, memoryview(buffer)[:size])
        if self._policy is FsyncPolicy.ALWAYS:
            self._part.sync()
        return at + size

    def _hash_job(self, buffer: bytearray, size: int) -> None:
        view = memoryview(buffer)[:size]
        if self._hasher is not None:
            self._hasher.update(view)
        if self._checksum is not None:
            self._checksum.hasher.update(view)

    def _maybe_checkpoint(self) -> None:
        """Record progress every ``sync_every`` bytes, syncing off the event loop."""
        if self._all_or_nothing:
            return
        if self._checkpoint is not None and not self._checkpoint.done():
            return
        if self._flushed - self._recorded < self._engine.sync_every:
            return
        # No job runs now, so the hasher sits exactly at the flushed offset.
        hasher = self._hasher.copy() if self._hasher is not None else None
        mark = _Mark(self._flushed, hasher)
        self._checkpoint = asyncio.ensure_future(self._sync_and_record(mark))

    async def _sync_and_record(self, mark: _Mark) -> None:
        if mark.end <= self._recorded:
            return
        if self._policy is not FsyncPolicy.NEVER:
            await asyncio.to_thread(self._part.sync)
        # Advance first: the progress event published while recording must not count these
        # bytes both as received and as still unrecorded.
        start, self._recorded = self._recorded, mark.end
        try:
            await self._engine.record_received(self._active, start, mark.end, mark.hasher)
        except BaseException:
            self._recorded = start
            raise
