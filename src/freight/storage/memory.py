"""Blobs in memory: a :class:`~freight.core.blobs.BlobStore` with no ability at all.

It exists to run the engine and the server down their fallback paths (no ``splice``, no
``sendfile``, no read-back, no server-side concatenation), and as the simplest blob store
for tests. Nothing survives the process.

Implementation: each blob is a dict of fixed-size pages (``bytearray``) keyed by page
index, so a write at any offset touches only the pages it covers: no copying and no
quadratic growth, and pages never written are holes that read as zeros. One lock guards
every blob; writers and readers run in the engine's worker threads.

Considerations: with a ``capacity``, pages are counted against it as they are allocated
and a write that needs more is :class:`~freight.errors.InsufficientStorage`;
:meth:`MemoryBlobs.free_bytes` reports what is left (``None`` without a capacity).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from freight._types import Buffer
from freight.errors import FreightError, InsufficientStorage, UploadNotFound
from freight.storage.ids import is_upload_id

__all__ = ["MemoryBlobs"]

PAGE_SIZE = 1024 * 1024


@dataclass
class _Blob:
    pages: dict[int, bytearray] = field(default_factory=dict)
    size: int = 0  # one past the highest byte written (the length, once finished)
    finished: bool = False
    deleted: bool = False


class MemoryBlobs:
    """Blobs in pages of ``page_size`` bytes, at most ``capacity`` bytes of pages in all."""

    def __init__(self, *, capacity: int | None = None, page_size: int = PAGE_SIZE) -> None:
        if page_size <= 0:
            raise ValueError("page_size must be positive")
        self.capacity = capacity
        self.page_size = page_size
        self._zeros = memoryview(bytes(page_size))
        self._blobs: dict[str, _Blob] = {}
        self._lock = threading.Lock()
        self._pages_used = 0

    @property
    def bytes_used(self) -> int:
        """Bytes of pages allocated (what the blobs hold in memory)."""
        return self._pages_used * self.page_size

    def _blob(self, upload_id: str) -> _Blob:
        blob = self._blobs.get(upload_id) if is_upload_id(upload_id) else None
        if blob is None:
            raise UploadNotFound("no such upload")
        return blob

    async def create(self, upload_id: str) -> None:
        if not is_upload_id(upload_id):
            raise UploadNotFound("no such upload")
        with self._lock:
            if upload_id in self._blobs:
                raise FreightError("an upload with this id already exists")
            self._blobs[upload_id] = _Blob()

    async def open_writer(self, upload_id: str) -> _Writer:
        with self._lock:
            return _Writer(self, self._blob(upload_id))

    async def open_reader(self, upload_id: str) -> _Reader:
        with self._lock:
            blob = self._blob(upload_id)
            if not blob.finished:
                raise UploadNotFound("upload data is missing")
            return _Reader(self, blob)

    async def finish(self, upload_id: str, length: int) -> None:
        with self._lock:
            blob = self._blob(upload_id)
            if blob.finished:
                return
            self._cut(blob, length)
            blob.size, blob.finished = length, True

    def _cut(self, blob: _Blob, length: int) -> None:
        """Drop pages (and bytes of the last page) past ``length``."""
        last = -(-length // self.page_size)
        for index in [i for i in blob.pages if i >= last]:
            del blob.pages[index]
            self._pages_used -= 1
        tail = blob.pages.get(length // self.page_size)
        if tail is not None:
            start = length % self.page_size
            tail[start:] = self._zeros[start:]

    async def delete(self, upload_id: str) -> None:
        if not is_upload_id(upload_id):
            raise UploadNotFound("no such upload")
        with self._lock:
            blob = self._blobs.pop(upload_id, None)
            if blob is not None:
                self._pages_used -= len(blob.pages)
                blob.pages.clear()
                blob.deleted = True

    async def free_bytes(self) -> int | None:
        if self.capacity is None:
            return None
        return max(self.capacity - self.bytes_used, 0)

    async def probe(self) -> None:
        return None

    async def close(self) -> None:
        with self._lock:
            self._blobs.clear()
            self._pages_used = 0

    # used by writers and readers, under the lock -----------------------------------------

    def _write(self, blob: _Blob, offset: int, data: Buffer) -> None:
        view = memoryview(data).cast("B")
        if offset < 0:
            raise ValueError("negative offset")
        with self._lock:
            if blob.deleted:
                raise UploadNotFound("upload data is missing")
            new = self._pages_needed(blob, offset, view.nbytes)
            if self.capacity is not None and (self._pages_used + new) * self.page_size > (
                self.capacity
            ):
                raise InsufficientStorage("the memory store is full")
            position = offset
            while view.nbytes:
                index, start = divmod(position, self.page_size)
                page = blob.pages.get(index)
                if page is None:
                    page = blob.pages[index] = bytearray(self.page_size)
                    self._pages_used += 1
                take = min(view.nbytes, self.page_size - start)
                page[start : start + take] = view[:take]
                view = view[take:]
                position += take
            blob.size = max(blob.size, position)

    def _pages_needed(self, blob: _Blob, offset: int, size: int) -> int:
        if not size:
            return 0
        first, last = offset // self.page_size, (offset + size - 1) // self.page_size
        return sum(1 for index in range(first, last + 1) if index not in blob.pages)

    def _read(self, blob: _Blob, offset: int, buffer: memoryview) -> int:
        target = buffer.cast("B")
        with self._lock:
            if blob.deleted:
                raise UploadNotFound("upload data is missing")
            count = max(min(target.nbytes, blob.size - offset), 0)
            done = 0
            while done < count:
                index, start = divmod(offset + done, self.page_size)
                take = min(count - done, self.page_size - start)
                page = blob.pages.get(index)
                if page is None:
                    target[done : done + take] = self._zeros[:take]
                else:
                    target[done : done + take] = memoryview(page)[start : start + take]
                done += take
            return count


class _Writer:
    __slots__ = ("_blob", "_store")

    def __init__(self, store: MemoryBlobs, blob: _Blob) -> None:
        self._store, self._blob = store, blob

    def write_at(self, offset: int, data: Buffer) -> None:
        self._store._write(self._blob, offset, data)

    def sync(self) -> None:
        pass

    def close(self) -> None:
        pass


class _Reader:
    __slots__ = ("_blob", "_store")

    def __init__(self, store: MemoryBlobs, blob: _Blob) -> None:
        self._store, self._blob = store, blob

    def read_into(self, offset: int, buffer: memoryview) -> int:
        return self._store._read(self._blob, offset, buffer)

    def close(self) -> None:
        pass
