"""The writer of one unfinished S3 blob: bytes land in the local spool, a part is uploaded
as soon as it is complete here, and :meth:`S3Writer.sync` makes the rest durable in the
bucket (see :mod:`freight.storage.s3_blobs` for the design)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import zlib
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TypeVar

from freight._types import Buffer
from freight.core.rangeset import RangeSet
from freight.errors import FreightError, UploadNotFound
from freight.storage.s3_io import StoreLoop
from freight.storage.s3_parts import S3Parts
from freight.storage.s3_spool import Spool
from freight.storage.s3_table import BlobTable, PartRow, PartTable, PieceRow

__all__ = ["FinishedWriter", "S3Writer", "WriterContext", "bounded"]

T = TypeVar("T")


@dataclass(frozen=True)
class WriterContext:
    """What every writer of one store shares."""

    parts: S3Parts
    table: PartTable
    bridge: StoreLoop
    release: Callable[[str], None]
    # Part uploads one writer keeps in flight (each streams from its own spool file).
    parallel: int


class S3Writer:
    """Writes at any offset into the upload's spool.

    A part complete in this node's spool is uploaded at once, while writing goes on (at
    most ``parallel`` in flight; one more waits), and recorded in the part table.
    :meth:`sync_through` (a checkpoint inside a request) waits for those uploads and
    reports how far the bytes from a given offset are in whole parts: no piece
    is stored mid-request, since a piece's bytes go up again inside their whole part.
    :meth:`sync` (a request's end) waits for every upload, then for each other part with
    new bytes uploads it whole if it can be completed (from the spool and pieces stored by
    any node), else stores its new ranges as pieces; the parts and pieces are recorded in
    one transaction before it returns. Neither holds up writes while it waits: writes take
    the writer's lock only to land in the spool, syncs take one of their own.
    """

    def __init__(
        self, context: WriterContext, upload_id: str, spool: Spool, table: BlobTable
    ) -> None:
        self._ctx = context
        self._id = upload_id
        self._spool = spool
        self._multipart = table.upload
        self._part_size = table.part_size
        # Parts uploaded whole when the writer opened: a rewrite carries the same bytes.
        self._whole = {number - 1 for number in table.parts if table.has_whole(number)}
        self._lock = threading.Lock()
        self._sync_lock = threading.Lock()
        # Absolute ranges per part index (0-based) written by this writer since its sync.
        self._dirty: dict[int, RangeSet] = {}
        self._inflight: dict[int, Future[None]] = {}
        # Bytes known to be in the bucket and named by the table (parts whole, pieces).
        self._durable_lock = threading.Lock()
        self._durable = table.piece_ranges()
        for index in self._whole:
            self._durable.add(index * self._part_size, (index + 1) * self._part_size)
        # CRC-32s of parts this writer filled in order from their first byte: index ->
        # (bytes covered, CRC). A part shipped with its whole CRC here is not read again to
        # checksum it; a write to the part anywhere else drops its entry.
        self._crcs: dict[int, tuple[int, int]] = {}
        self._closed = False

    def write_at(self, offset: int, data: Buffer) -> None:
        view = memoryview(data).cast("B")
        size = self._part_size
        complete: list[int] = []
        with self._lock:
            if self._closed:
                raise FreightError("write to a closed blob writer")
            done = 0
            while done < len(view):
                at = offset + done
                index, within = divmod(at, size)
                take = min(size - within, len(view) - done)
                piece = view[done : done + take]
                if index not in self._whole and self._spool.write(index, within, piece, at):
                    self._follow_crc(index, within, piece)
                    dirty = self._dirty.get(index)
                    if dirty is None:
                        dirty = self._dirty[index] = RangeSet()
                        self._spool.pend(index, 1)
                    dirty.add(at, at + take)
                    if self._spool.start_ship(index, index * size, (index + 1) * size):
                        complete.append(index)
                done += take
        for index in complete:
            self._ship(index)

    def _follow_crc(self, index: int, within: int, piece: memoryview) -> None:
        covered, crc = self._crcs.get(index, (0, 0))
        if within == covered:
            self._crcs[index] = (covered + len(piece), zlib.crc32(piece, crc))
        else:
            self._crcs.pop(index, None)

    def _whole_crc(self, index: int) -> bytes | None:
        """Part ``index``'s CRC-32 if this writer wrote all of it in order (then forgotten)."""
        covered, crc = self._crcs.pop(index, (0, 0))
        return crc.to_bytes(4, "big") if covered == self._part_size else None

    def _ship(self, index: int) -> None:
        """Start uploading part ``index`` once fewer than ``parallel`` are in flight
        (waiting for the oldest, outside the lock: other writers go on meanwhile)."""
        while True:
            with self._lock:
                for done in [i for i, f in self._inflight.items() if _succeeded(f)]:
                    del self._inflight[done]
                if len(self._inflight) < self._ctx.parallel:
                    upload = self._upload_shipped
                    crc = self._whole_crc(index)
                    self._inflight[index] = self._ctx.bridge.submit(upload, index, crc)
                    return
                oldest = next(iter(self._inflight.values()))
            self._ctx.bridge.wait(oldest)  # raises its failure: writing stops here

    async def _upload_shipped(self, index: int, crc: bytes | None) -> None:
        uploaded = False
        fd = self._spool.dup(index)
        try:
            row = await self._ctx.parts.upload_part(
                self._id, self._multipart, index + 1, fd, self._part_size, crc
            )
            await self._ctx.table.record(self._id, parts=[row])
            uploaded = True
            self._note_durable(index * self._part_size, (index + 1) * self._part_size)
        finally:
            os.close(fd)
            self._spool.shipped(index, uploaded)

    def _note_durable(self, start: int, end: int) -> None:
        with self._durable_lock:
            self._durable.add(start, end)

    def _wait(self, futures: list[tuple[int, Future[None]]]) -> None:
        """Wait for part uploads; raise the first failure once all have ended. Each is
        then forgotten (a failed part is still in the spool: :meth:`sync` sends it)."""
        failure: Exception | None = None
        for _, future in futures:
            try:
                self._ctx.bridge.wait(future)
            except Exception as exc:  # the rest are waited for first
                failure = failure or exc
        with self._lock:
            for index, future in futures:
                if self._inflight.get(index) is future:
                    del self._inflight[index]
        if failure is not None:
            raise failure

    def sync_through(self, start: int, end: int) -> int:
        """A checkpoint inside a request: wait for the part uploads in flight (complete
        parts, below ``end``; writes go on meanwhile) and return how far bytes from
        ``start`` are in whole parts (at most ``end``). A part this node's spool could
        not complete (its first bytes came through another node) is completed from its
        pieces here, once. No piece is stored: the request's :meth:`sync` stores its
        tail. So what is recorded trails what is written by the part being filled."""
        size = self._part_size
        with self._sync_lock:
            with self._lock:
                inflight = list(self._inflight.items())
            self._wait(inflight)
            while True:
                with self._durable_lock:
                    run = max(start, self._durable.end_of_run_from(start))
                index = run // size
                if run >= end or (index + 1) * size > end or not self._completable(index):
                    return min(run, end)
                if not self._ctx.bridge.run(self._complete_recorded, index):
                    return run

    def _completable(self, index: int) -> bool:
        """Whether part ``index`` has bytes of this writer's, none in flight, and is not
        complete in the spool (then it ships by itself)."""
        with self._lock:
            if index not in self._dirty or index in self._inflight:
                return False
        size = self._part_size
        return not self._spool.is_uploaded(index) and not self._spool.valid(index).covers(
            index * size, (index + 1) * size
        )

    async def _complete_recorded(self, index: int) -> bool:
        """Complete part ``index`` from the spool and recorded pieces, if they cover it."""
        table = await self._ctx.table.load(self._id)
        if table is None:
            raise UploadNotFound("the blob's part table is gone (deleted or finished)")
        start, end = index * self._part_size, (index + 1) * self._part_size
        have = self._spool.valid(index)
        for a, b in table.piece_ranges():
            have.add(a, b)
        if not (table.has_whole(index + 1) or have.covers(start, end)):
            return False
        if not table.has_whole(index + 1):
            row = await self._complete(index, table)
            await self._ctx.table.record(self._id, parts=[row])
            self._spool.shipped(index, True)
        self._note_durable(start, end)
        return True

    def sync(self) -> None:
        self._sync_parts(0, None)

    def sync_range(self, start: int, end: int) -> None:
        """A request's end: make its bytes ``[start, end)`` durable like :meth:`sync`,
        leaving alone the parts other writers of this node are filling (parallel chunks:
        syncing those would store their bytes so far as pieces, to go up again)."""
        if end > start:
            self._sync_parts(start // self._part_size, (end - 1) // self._part_size)

    def _sync_parts(self, first: int, last: int | None) -> None:
        """Sync the parts ``first..last`` (``None``: every part)."""

        def chosen(index: int) -> bool:
            # Parts shipped whole have nothing left to sync: their entries go too.
            wanted = first <= index and (last is None or index <= last)
            return wanted or self._spool.is_uploaded(index)

        with self._sync_lock:
            with self._lock:
                inflight = [(i, f) for i, f in self._inflight.items() if chosen(i)]
                dirty = {i: r for i, r in self._dirty.items() if chosen(i)}
                for index in dirty:
                    del self._dirty[index]
            try:
                self._wait(inflight)
                # Parts completed meanwhile by other writers of this node are uploading.
                with self._lock:
                    again = [(i, f) for i, f in self._inflight.items() if i in dirty]
                self._wait(again)
                if dirty:
                    self._ctx.bridge.run(self._sync, dirty)
            except BaseException:
                self._restore(dirty)
                raise
            self._settle(dirty)
            if dirty:
                # Synced partial parts are pieces in the bucket now; the spool keeps the
                # last (a sequential upload's tail, completed by its next request) and
                # lets the rest go, so writes in any order cannot pile up partial parts.
                self._spool.drop_partials(keep=max(dirty))

    def _restore(self, dirty: dict[int, RangeSet]) -> None:
        """A failed sync: its ranges are unsynced still (written again meanwhile, a part
        counts one pending writer)."""
        with self._lock:
            for index, ranges in dirty.items():
                now = self._dirty.get(index)
                if now is None:
                    self._dirty[index] = ranges
                    continue
                self._spool.pend(index, -1)
                for a, b in ranges:
                    now.add(a, b)

    def _settle(self, dirty: dict[int, RangeSet]) -> None:
        for index in dirty:
            self._spool.pend(index, -1)

    async def _sync(self, dirty: dict[int, RangeSet]) -> None:
        table = await self._ctx.table.load(self._id)
        if table is None:
            raise UploadNotFound("the blob's part table is gone (deleted or finished)")
        stored = table.piece_ranges()
        wholes: list[Awaitable[PartRow]] = []
        pieces: list[Awaitable[PieceRow]] = []
        for index, ranges in sorted(dirty.items()):
            if self._spool.is_uploaded(index) or table.has_whole(index + 1):
                continue  # a rewrite carries the same bytes
            start = index * self._part_size
            have = self._spool.valid(index)
            for a, b in stored:
                have.add(a, b)
            if have.covers(start, start + self._part_size):
                wholes.append(self._complete(index, table))
            else:
                pieces.extend(self._put_piece(index, a, b) for a, b in ranges)
        parts = await bounded(wholes, self._ctx.parallel)
        new_pieces = await bounded(pieces, self._ctx.parallel)
        try:
            await self._ctx.table.record(self._id, parts, new_pieces)
        except UploadNotFound:
            # Deleted meanwhile: what was just stored would outlive it.
            keys = [self._ctx.parts.piece_key(self._id, p.start, p.end) for p in new_pieces]
            await self._ctx.parts.delete_keys(keys)
            raise
        for row in parts:
            self._spool.shipped(row.number - 1, True)
            start = (row.number - 1) * self._part_size
            self._note_durable(start, start + self._part_size)
        for piece in new_pieces:
            self._note_durable(piece.start, piece.end)

    async def _put_piece(self, index: int, start: int, end: int) -> PieceRow:
        fd = self._spool.dup(index)
        try:
            return await self._ctx.parts.put_piece(
                self._id, fd, start - index * self._part_size, start, end
            )
        finally:
            os.close(fd)

    async def _complete(self, index: int, table: BlobTable) -> PartRow:
        """Upload part ``index`` whole, its missing bytes fetched from pieces first."""
        start = index * self._part_size
        end = start + self._part_size
        missing = RangeSet([(start, end)])
        for a, b in self._spool.valid(index):
            missing = _subtract(missing, a, b)
        fd = self._spool.dup(index)
        try:
            await self._ctx.parts.fetch_pieces(self._id, table, fd, start, missing)
            self._spool.mark_valid(index, start, end)
            return await self._ctx.parts.upload_part(
                self._id, self._multipart, index + 1, fd, self._part_size
            )
        finally:
            os.close(fd)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            inflight = list(self._inflight.items())
            dirty, self._dirty = self._dirty, {}
        # A failed upload was never recorded: its bytes are sent again.
        with contextlib.suppress(Exception):
            self._wait(inflight)
        self._settle(dirty)
        self._ctx.release(self._id)


def _succeeded(future: Future[None]) -> bool:
    return future.done() and not future.cancelled() and future.exception() is None


async def bounded(jobs: Sequence[Awaitable[T]], limit: int) -> list[T]:
    """Await ``jobs`` with at most ``limit`` running; every one ends before the first
    failure is raised."""
    gate = asyncio.Semaphore(limit)

    async def one(job: Awaitable[T]) -> T:
        async with gate:
            return await job

    results = await asyncio.gather(*(one(job) for job in jobs), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return [result for result in results if not isinstance(result, BaseException)]


class FinishedWriter:
    """The writer of a blob the store has finished already: nothing is left to write."""

    def write_at(self, offset: int, data: Buffer) -> None:
        raise FreightError("the blob is finished already")

    def sync(self) -> None:
        pass

    def close(self) -> None:
        pass


def _subtract(ranges: RangeSet, start: int, end: int) -> RangeSet:
    left = RangeSet()
    for a, b in ranges:
        if a < start:
            left.add(a, min(b, start))
        if b > end:
            left.add(max(a, end), b)
    return left
