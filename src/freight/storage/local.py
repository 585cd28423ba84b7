"""Local filesystem storage with SQLite metadata: the embedded default.

:func:`open_local` wires the two halves into a :class:`~freight.core.ports.Backend`:
:class:`~freight.storage.local_sessions.SqliteSessions` (records) and
:class:`~freight.storage.local_blobs.LocalBlobs` (bytes). Layout under the data directory::

    freight.db            SQLite (WAL): one row per upload session, finished or not
                          (:mod:`.local_db`)
    space-reserve         a few MiB of real blocks kept for freight.db when the disk fills
    uploads/<id>.part     an unfinished upload; bytes are written in place at their final
                          offsets and take space only as they arrive (no preallocation)
    files/<id>            a finished upload, renamed from its part file (never copied)

Only ids made by :func:`freight.core.session.new_upload_id` become file names, and every path
is checked to stay inside the data directory; client-supplied names live only in metadata.

Considerations: the row is committed with ``synchronous=FULL`` when data is synced, so the
offset a session records never runs ahead of the bytes on disk. A crash between the rename
and the row update is repaired on open (a part that has become a file is finished again);
blobs without a row are dropped on open. When the disk fills, the reserve is given to SQLite
so the bytes written so far can still be recorded, and no upload data is written until the
reserve is back (see :mod:`.local_files`).

:class:`LocalStore` is the same backend behind the engine's former single interface
(:class:`~freight.core.ports.UploadStore`), kept until the engine has moved to the ports.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from freight.core.ports import Backend, ListingKind, PageKey, UnfinishedTotals
from freight.core.session import UploadSession
from freight.errors import UploadNotFound
from freight.storage.ids import is_upload_id
from freight.storage.local_blobs import LocalBlobs
from freight.storage.local_db import SessionTable
from freight.storage.local_files import (
    LocalPartFile,
    SpaceReserve,
    space_error,
    sync_dir,
)
from freight.storage.local_sessions import SqliteSessions

__all__ = ["METADATA_RESERVE", "LocalPartFile", "LocalStore", "open_local"]

log = logging.getLogger(__name__)

# Room kept for the metadata store: thousands of row updates (WAL frames of a few pages).
METADATA_RESERVE = 8 * 1024 * 1024


def open_local(
    data_dir: Path, *, durable: bool = True, metadata_reserve: int = METADATA_RESERVE
) -> Backend:
    """The local backend in ``data_dir``: records in ``freight.db``, bytes as files.

    The space reserve is shared: when SQLite finds the disk full it spends the blob store's
    reserve, and deleting a blob takes it back. Blobs without a record (a crash came between
    a blob and its record changing) are dropped here, before anything else runs.
    """
    blobs = LocalBlobs(data_dir, metadata_reserve)
    sessions = SqliteSessions(
        blobs.root / "freight.db", durable=durable, on_full=blobs.give_reserve_to_metadata
    )
    try:
        dropped = blobs.drop_orphans(sessions.ids())
    except BaseException:
        sessions.table.close()
        raise
    if dropped:
        log.info("dropped %d stored blobs that had no session record", dropped)
    return Backend(sessions=sessions, blobs=blobs)


class LocalStore:
    """Uploads as files in ``data_dir``, sessions as rows in ``data_dir/freight.db``."""

    def __init__(
        self, data_dir: Path, *, durable: bool = True, metadata_reserve: int = METADATA_RESERVE
    ) -> None:
        self.root = data_dir.resolve()
        self.uploads_dir = self.root / "uploads"
        self.files_dir = self.root / "files"
        for folder in (self.root, self.uploads_dir, self.files_dir):
            folder.mkdir(parents=True, exist_ok=True)
        # A small filesystem keeps a proportionally smaller reserve.
        reserve = min(metadata_reserve, shutil.disk_usage(self.root).total // 32)
        self.space_reserve = SpaceReserve(self.root / "space-reserve", reserve)
        self._table = SessionTable(
            self.root / "freight.db", durable=durable, on_full=self._give_reserve_to_metadata
        )
        self._repair()

    def _give_reserve_to_metadata(self) -> bool:
        released = self.space_reserve.release()
        if released:
            log.warning("the disk is full: the metadata store takes its reserved space")
        return released

    # paths -------------------------------------------------------------------------------

    def _inside(self, folder: Path, name: str) -> Path:
        if not is_upload_id(name.removesuffix(".part")):
            raise UploadNotFound("no such upload")
        path = folder / name
        if path.parent != folder:
            raise UploadNotFound("no such upload")
        return path

    def part_path(self, upload_id: str) -> Path:
        return self._inside(self.uploads_dir, f"{upload_id}.part")

    def file_path(self, upload_id: str) -> Path:
        return self._inside(self.files_dir, upload_id)

    # sessions ----------------------------------------------------------------------------

    def create(self, session: UploadSession) -> None:
        path = self.part_path(session.id)
        try:
            os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
        except OSError as exc:
            raise space_error(exc) from exc
        try:
            self._table.put(session)
        except BaseException:
            path.unlink(missing_ok=True)
            raise

    def reserve(self, session: UploadSession) -> None:
        """Nothing to take: space is used as bytes arrive. The part must still exist."""
        if session.length and not self.part_path(session.id).exists():
            raise UploadNotFound("upload data is missing")

    def load(self, upload_id: str) -> UploadSession:
        if not is_upload_id(upload_id):
            raise UploadNotFound("no such upload")
        session = self._table.get(upload_id)
        if session is None:
            raise UploadNotFound("no such upload")
        return session

    def save(self, session: UploadSession) -> None:
        self._table.put(session)

    def list_sessions(self) -> list[UploadSession]:
        return self._table.all()

    def list_page(
        self, kind: ListingKind, after: PageKey | None, limit: int, now: float
    ) -> list[UploadSession]:
        return self._table.page(kind, after, limit, now)

    def unfinished_totals(self, now: float, client: str | None = None) -> UnfinishedTotals:
        return self._table.unfinished_totals(now, client)

    def work_ids(self, limit: int) -> list[str]:
        return self._table.work_ids(limit)

    def expired_ids(self, now: float) -> list[str]:
        return self._table.expired_ids(now)

    # bytes -------------------------------------------------------------------------------

    def open_part(self, session: UploadSession) -> LocalPartFile:
        part = self.part_path(session.id)
        if part.exists() or not self.file_path(session.id).exists():
            return LocalPartFile(part, writable=True, reserve=self.space_reserve)
        # Finished on disk but not yet in the row (a crash in between): read from the file.
        return LocalPartFile(self.file_path(session.id), writable=True, reserve=self.space_reserve)

    def open_file(self, upload_id: str) -> LocalPartFile:
        return LocalPartFile(self.file_path(upload_id), writable=False)

    def finish(self, session: UploadSession) -> None:
        part = self.part_path(session.id)
        target = self.file_path(session.id)
        if part.exists():
            try:
                os.rename(part, target)
                sync_dir(self.files_dir)
                sync_dir(self.uploads_dir)
            except OSError as exc:
                raise space_error(exc) from exc
        self.save(session)

    def delete(self, upload_id: str) -> None:
        self._table.remove(upload_id)
        for path in (self.part_path(upload_id), self.file_path(upload_id)):
            path.unlink(missing_ok=True)
        # Space came free: the metadata reserve, if it was spent, is the first to get it.
        if not self.space_reserve.held:
            self.space_reserve.restore()

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free

    def close(self) -> None:
        self._table.close()

    def _repair(self) -> None:
        """Drop files that have no row: a crash came between a file and its row changing."""
        known = self._table.ids()
        for entry in self.uploads_dir.iterdir():
            if entry.suffix == ".part" and entry.stem not in known:
                entry.unlink(missing_ok=True)
        for entry in self.files_dir.iterdir():
            if entry.name not in known:
                entry.unlink(missing_ok=True)
