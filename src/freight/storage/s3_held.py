"""Reading recorded bytes of an unfinished S3 blob without finishing it, for the running
SHA-256 (:class:`~freight.core.blobs.HeldRanges`): from this node's spool where it still
holds them (parts held after their upload, parts being filled), else from pieces (objects
of their own, read with a ranged GET). Bytes only inside uploaded parts cannot be read
before the multipart upload is completed: there the reader reports none."""

from __future__ import annotations

from freight.storage.s3_io import StoreLoop, read_range
from freight.storage.s3_parts import S3Parts
from freight.storage.s3_spool import Spool
from freight.storage.s3_table import BlobTable, PartTable

__all__ = ["HeldReader"]


class HeldReader:
    """A :class:`~freight.core.blobs.BlobReader` of an unfinished blob's held bytes; its
    ``read_into`` returns 0 where neither the spool nor a piece has them. Called from worker
    threads; the part table is loaded (once) only when the spool falls short."""

    def __init__(
        self,
        spool: Spool | None,
        bridge: StoreLoop,
        parts: S3Parts,
        table: PartTable,
        upload_id: str,
    ) -> None:
        self._spool = spool
        self._bridge = bridge
        self._parts = parts
        self._table = table
        self._id = upload_id
        self._loaded: BlobTable | None = None
        self._tried = False
        # What came from the bucket (the rest came from the spool), for counters.
        self.fetched = 0

    def read_into(self, offset: int, buffer: memoryview) -> int:
        if self._spool is not None:
            got = self._spool.read_held(offset, buffer)
            if got > 0:
                return got
        table = self._pieces()
        if table is None:
            return 0
        for piece in table.pieces:
            if piece.start <= offset < piece.end:
                want = min(len(buffer), piece.end - offset)
                key = self._parts.piece_key(self._id, piece.start, piece.end)
                got = int(self._bridge.run(self._fetch, key, offset - piece.start, buffer[:want]))
                self.fetched += got
                return got
        return 0

    def _pieces(self) -> BlobTable | None:
        if not self._tried:
            self._tried = True
            self._loaded = self._bridge.run(self._table.load, self._id)
        return self._loaded

    async def _fetch(self, key: str, offset: int, target: memoryview) -> int:
        return await read_range(self._parts.client, self._parts.bucket, key, offset, target)

    def close(self) -> None:
        pass
