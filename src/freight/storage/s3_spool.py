"""The local spool of S3 blobs: one sparse file per part, shared by an upload's writers on
this node and kept a while after the last one closes, so the next request of a sequential
upload finds its part's earlier bytes here instead of downloading its pieces back.

A part uploaded before the running SHA-256 reached it (it arrived out of order) is *held*:
its file stays, so the node that completes the prefix before it hashes it from here
instead of from the finished object. At most :data:`HOLD_PARTS` parts are held per upload,
those nearest the hashed prefix; a part beyond them goes as before (its bytes are hashed at
finish, read back from the finished object). A held part goes once the hash passes it."""

from __future__ import annotations

import os
import shutil
import threading
from collections import OrderedDict
from pathlib import Path

from freight.core.rangeset import RangeSet
from freight.errors import storage_os_error

__all__ = ["HOLD_PARTS", "Spool", "SpoolCache"]

# Uploaded parts kept per upload for the running hash: parallel chunk streams run a few
# parts ahead of the hashed prefix (4 streams: up to 4 parts, one more while the prefix
# catches up), so 8 hold them all; only writes far out of order (reversed, shuffled) go past.
HOLD_PARTS = 8


class Spool:
    """The part files of one upload and which of their bytes are valid.

    Every descriptor is used under ``lock`` or duplicated first, so dropping a part while
    another writer streams it never closes a descriptor under that writer.
    """

    def __init__(self, path: Path, part_size: int = 0, hold_parts: int = HOLD_PARTS) -> None:
        self.path = path
        self.part_size = part_size
        self.hold_parts = hold_parts
        self.lock = threading.Lock()
        self.users = 0
        self._fds: dict[int, int] = {}
        self._valid: dict[int, RangeSet] = {}
        # Parts this node uploaded whole (their files are gone) and ones on their way.
        self._uploaded: set[int] = set()
        self._shipping: set[int] = set()
        # Writers holding unsynced bytes, per part: such a part's file must stay.
        self._pending: dict[int, int] = {}
        # Uploaded parts whose files stay for the running hash, and where that hash stands.
        self._held: set[int] = set()
        self._hashed_to: int | None = None  # None: nobody hashes (from here): hold nothing

    def write(self, index: int, within: int, view: memoryview, start: int) -> bool:
        """Write ``view`` at ``within`` of part ``index`` (absolute offset ``start``);
        ``False`` (nothing written) when the part is uploaded already: bytes written at
        an offset again are the same bytes."""
        with self.lock:
            if index in self._uploaded:
                return False
            fd = self._fd(index)
            at = within
            try:
                while view:
                    written = os.pwrite(fd, view, at)
                    view = view[written:]
                    at += written
            except OSError as exc:
                raise storage_os_error(exc) from exc
            self._valid.setdefault(index, RangeSet()).add(start, start + at - within)
            return True

    def start_ship(self, index: int, start: int, end: int) -> bool:
        """Whether part ``index`` (bytes ``[start, end)``) is all here and nobody is
        uploading it yet; if so the caller uploads it and calls :meth:`shipped`."""
        with self.lock:
            if index in self._uploaded or index in self._shipping:
                return False
            valid = self._valid.get(index)
            if valid is None or not valid.covers(start, end):
                return False
            self._shipping.add(index)
            return True

    def shipped(self, index: int, uploaded: bool) -> None:
        with self.lock:
            self._shipping.discard(index)
            if uploaded:
                self._uploaded.add(index)
                self._hold_or_drop(index)

    def _hold_or_drop(self, index: int) -> None:
        """Keep uploaded part ``index``'s file if the hash has not passed it and it is among
        the :attr:`hold_parts` nearest the hashed prefix (the farthest held one goes)."""
        valid = self._valid.get(index)
        hashed = self._hashed_to
        if valid is None or self.hold_parts <= 0 or hashed is None or valid.highest() <= hashed:
            self._drop(index)
            return
        self._held.add(index)
        while len(self._held) > self.hold_parts:
            self._drop(max(self._held))

    def hashed_through(self, offset: int) -> None:
        """The running hash covers bytes before ``offset``: held parts there go. Until a
        first call, no part is held (nothing hashes this upload's bytes through here)."""
        with self.lock:
            self._hashed_to = max(self._hashed_to or 0, offset)
            for index in list(self._held):
                valid = self._valid.get(index)
                if valid is None or valid.highest() <= offset:
                    self._drop(index)

    def read_held(self, offset: int, buffer: memoryview) -> int:
        """Fill ``buffer`` from absolute ``offset`` with bytes this spool holds (held
        parts, parts being filled); 0 when it holds none there."""
        if self.part_size <= 0:
            return 0
        index, within = divmod(offset, self.part_size)
        with self.lock:
            valid = self._valid.get(index)
            fd = self._fds.get(index)
            if valid is None or fd is None:
                return 0
            want = min(len(buffer), valid.end_of_run_from(offset) - offset)
            if want <= 0:
                return 0
            try:
                return os.preadv(fd, [buffer[:want]], within)
            except OSError as exc:
                raise storage_os_error(exc) from exc

    def held(self) -> list[int]:
        """The parts held for the running hash (for checks)."""
        with self.lock:
            return sorted(self._held)

    def pend(self, index: int, change: int) -> None:
        with self.lock:
            count = self._pending.get(index, 0) + change
            if count > 0:
                self._pending[index] = count
            else:
                self._pending.pop(index, None)

    def dup_if_covers(self, index: int, start: int, end: int) -> int | None:
        """A descriptor of part ``index``'s file if it holds bytes ``[start, end)``."""
        with self.lock:
            valid = self._valid.get(index)
            if valid is None or not valid.covers(start, end):
                return None
            return os.dup(self._fd(index))

    def drop_partials(self, keep: int) -> None:
        """Remove the files of parts other than ``keep`` that no writer has unsynced
        bytes in and nobody is uploading (what they hold is stored as pieces)."""
        with self.lock:
            for index in list(self._fds):
                if index == keep or index in self._held:
                    continue
                if index not in self._pending and index not in self._shipping:
                    self._drop(index)

    def is_uploaded(self, index: int) -> bool:
        with self.lock:
            return index in self._uploaded

    def mark_valid(self, index: int, start: int, end: int) -> None:
        with self.lock:
            self._valid.setdefault(index, RangeSet()).add(start, end)

    def valid(self, index: int) -> RangeSet:
        with self.lock:
            return self._valid.get(index, RangeSet()).copy()

    def dup(self, index: int) -> int:
        """A descriptor of part ``index``'s file for the caller to close."""
        with self.lock:
            return os.dup(self._fd(index))

    def _drop(self, index: int) -> None:
        fd = self._fds.pop(index, None)
        if fd is not None:
            os.close(fd)
        (self.path / str(index)).unlink(missing_ok=True)
        self._valid.pop(index, None)
        self._held.discard(index)

    def size(self) -> int:
        with self.lock:
            return sum(ranges.total() for ranges in self._valid.values())

    def remove(self) -> None:
        with self.lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()
            self._valid.clear()
            shutil.rmtree(self.path, ignore_errors=True)

    def _fd(self, index: int) -> int:
        fd = self._fds.get(index)
        if fd is None:
            try:
                self.path.mkdir(exist_ok=True)
                fd = os.open(self.path / str(index), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                raise storage_os_error(exc) from exc
            self._fds[index] = fd
        return fd


class SpoolCache:
    """Spools by upload id; idle ones are kept, least recently used first out, while their
    bytes stay under ``keep_bytes``."""

    def __init__(self, root: Path, keep_bytes: int, part_size: int = 0) -> None:
        self._root = root
        self._part_size = part_size
        self._keep_bytes = keep_bytes
        self._lock = threading.Lock()
        self._spools: OrderedDict[str, Spool] = OrderedDict()

    def acquire(self, upload_id: str) -> Spool:
        with self._lock:
            spool = self._spools.get(upload_id)
            if spool is None:
                spool = self._spools[upload_id] = Spool(self._root / upload_id, self._part_size)
            self._spools.move_to_end(upload_id)
            spool.users += 1
            return spool

    def release(self, upload_id: str) -> None:
        with self._lock:
            spool = self._spools.get(upload_id)
            if spool is not None:
                spool.users -= 1
            self._trim()

    def peek(self, upload_id: str) -> Spool | None:
        with self._lock:
            return self._spools.get(upload_id)

    def forget(self, upload_id: str) -> None:
        """The upload is finished or deleted: its spool is of no more use (writers still
        open keep theirs until they close)."""
        with self._lock:
            spool = self._spools.get(upload_id)
            if spool is not None and spool.users <= 0:
                del self._spools[upload_id]
                spool.remove()

    def _trim(self) -> None:
        idle = [(key, spool) for key, spool in self._spools.items() if spool.users <= 0]
        kept = sum(spool.size() for _, spool in idle)
        for key, spool in idle:  # oldest first
            if kept <= self._keep_bytes:
                break
            kept -= spool.size()
            del self._spools[key]
            spool.remove()
