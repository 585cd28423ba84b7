"""The writer of one unfinished S3 blob: bytes land in the local spool and are made durable
in the bucket by :meth:`S3Writer.sync` (see :mod:`freight.storage.s3_blobs` for the design)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

from freight._types import Buffer
from freight.core.rangeset import RangeSet
from freight.errors import FreightError
from freight.storage.s3_io import LoopBridge
from freight.storage.s3_parts import S3Parts
from freight.storage.s3_spool import Spool
from freight.storage.s3_state import PartTable

__all__ = ["FinishedWriter", "S3Writer"]


class S3Writer:
    """Writes at any offset into the upload's spool; ``sync`` uploads what is new.

    A part whose bytes are all here (in this node's spool, or stored as fragments by any
    node) is uploaded whole; the new bytes of any other part are stored as fragment objects.
    Either way they are in the bucket, recorded in the part table, when ``sync`` returns.
    """

    def __init__(
        self,
        parts: S3Parts,
        bridge: LoopBridge,
        release: Callable[[str], None],
        upload_id: str,
        spool: Spool,
        part_size: int,
    ) -> None:
        self._parts = parts
        self._bridge = bridge
        self._release = release
        self._id = upload_id
        self._spool = spool
        self._part_size = part_size
        self._lock = threading.Lock()
        # Absolute ranges per part index (0-based) written by this writer since its sync.
        self._dirty: dict[int, RangeSet] = {}
        self._closed = False

    def write_at(self, offset: int, data: Buffer) -> None:
        view = memoryview(data).cast("B")
        with self._lock:
            if self._closed:
                raise FreightError("write to a closed blob writer")
            done = 0
            while done < len(view):
                at = offset + done
                index, within = divmod(at, self._part_size)
                take = min(self._part_size - within, len(view) - done)
                self._spool.write(index, within, view[done : done + take], at)
                self._dirty.setdefault(index, RangeSet()).add(at, at + take)
                done += take

    def sync(self) -> None:
        with self._lock:
            if not self._dirty:
                return
            self._bridge.run(self._sync)
            self._dirty.clear()

    async def _sync(self) -> None:
        parts = self._parts
        table = await parts.tables.load(parts.state_key(self._id))
        if table is None:
            raise FreightError("the blob's part table is gone (deleted or finished)")
        uploaded: dict[int, tuple[str, int]] = {}
        new_frags: list[tuple[int, int]] = []
        stored = table.fragment_ranges()
        for index, dirty in sorted(self._dirty.items()):
            number = index + 1
            if table.parts.get(number, ("", 0))[1] == self._part_size:
                continue  # already uploaded whole; a rewrite carries the same bytes
            start = index * self._part_size
            have = self._spool.valid(index)
            for a, b in stored:
                have.add(a, b)
            fd = self._spool.dup(index)
            try:
                if have.covers(start, start + self._part_size):
                    uploaded[number] = await self._upload_whole(index, table, fd)
                else:
                    for a, b in dirty:
                        await parts.put_fragment(self._id, fd, a - start, a, b)
                        new_frags.append((a, b))
            finally:
                os.close(fd)

        def merge(fresh: PartTable) -> None:
            fresh.parts.update(uploaded)
            for a, b in new_frags:
                fresh.add_frag(a, b)

        await parts.tables.update(parts.state_key(self._id), merge)
        for number in uploaded:
            self._spool.drop(number - 1)

    async def _upload_whole(self, index: int, table: PartTable, fd: int) -> tuple[str, int]:
        start = index * self._part_size
        end = start + self._part_size
        missing = RangeSet([(start, end)])
        for a, b in self._spool.valid(index):
            missing = _subtract(missing, a, b)
        await self._parts.fetch_fragments(self._id, table, fd, start, missing)
        self._spool.mark_valid(index, start, end)
        etag = await self._parts.upload_part(self._id, table, index + 1, fd, self._part_size)
        return etag, self._part_size

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._release(self._id)


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
