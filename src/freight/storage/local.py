"""Local filesystem storage with SQLite metadata: the embedded default.

Layout under the data directory::

    freight.db            SQLite (WAL): one row per upload session, finished or not
    uploads/<id>.part     an unfinished upload, preallocated to its declared length; bytes
                          are written in place at their final offsets
    files/<id>            a finished upload, renamed from its part file (never copied)

Only ids made by :func:`freight.core.session.new_upload_id` become file names, and every path
is checked to stay inside the data directory; client-supplied names live only in metadata.

Considerations: the row is committed with ``synchronous=FULL`` when data is synced, so the
offset a session records never runs ahead of the bytes on disk. A crash between the rename
and the row update is repaired on open (a part that has become a file is finished again).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import json
import os
import re
import shutil
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from freight._types import Buffer
from freight.core.rangeset import RangeSet
from freight.core.session import ConcatKind, UploadSession, UploadState
from freight.errors import FreightError, InsufficientStorage, UploadNotFound

__all__ = ["LocalPartFile", "LocalStore"]

_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,128}$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS uploads (
    id TEXT PRIMARY KEY,
    length INTEGER,
    metadata TEXT NOT NULL,
    received TEXT NOT NULL,
    state TEXT NOT NULL,
    hashed_offset INTEGER NOT NULL,
    hash_state BLOB,
    created REAL NOT NULL,
    expires REAL,
    concat_kind TEXT,
    concat_parts TEXT NOT NULL,
    sha256 TEXT,
    finished REAL,
    used_by TEXT
);
CREATE INDEX IF NOT EXISTS uploads_state ON uploads (state, expires);
"""
# Columns added since the first schema, each with its type: added to older databases on open.
_ADDED_COLUMNS = (("used_by", "TEXT"),)

_COLUMNS = (
    "id",
    "length",
    "metadata",
    "received",
    "state",
    "hashed_offset",
    "hash_state",
    "created",
    "expires",
    "concat_kind",
    "concat_parts",
    "sha256",
    "finished",
    "used_by",
)


def _read_exactly(fd: int, size: int) -> bytes:
    pieces = []
    while size:
        piece = os.read(fd, size)
        if not piece:
            raise OSError(errno.EIO, "the pipe ran dry before its bytes were written")
        pieces.append(piece)
        size -= len(piece)
    return b"".join(pieces)


def _space_error(exc: OSError) -> FreightError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return InsufficientStorage("the server's disk is full")
    return FreightError(f"storage failure: {exc.strerror or exc}")


def _load_fallocate() -> Any:
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return None
    libc = ctypes.CDLL(libc_name, use_errno=True)
    func = getattr(libc, "fallocate64", None) or getattr(libc, "fallocate", None)
    if func is not None:
        func.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    return func


_FALLOCATE = _load_fallocate()


def preallocate(fd: int, length: int) -> None:
    """Reserve ``length`` bytes without writing them (a sparse file where unsupported).

    glibc's posix_fallocate would emulate an unsupported fallocate by writing zeros over the
    whole length, which for a 50 GB upload is minutes of I/O; we fall back to ftruncate.
    """
    if length <= 0:
        return
    if _FALLOCATE is not None and _FALLOCATE(fd, 0, 0, length) == 0:
        return
    err = ctypes.get_errno() if _FALLOCATE is not None else errno.EOPNOTSUPP
    if err in (errno.ENOSPC, errno.EDQUOT):
        raise InsufficientStorage("not enough disk space for the declared length")
    os.ftruncate(fd, length)


class LocalPartFile:
    """An open file written with positional writes; safe to use from one thread at a time."""

    __slots__ = ("_fd",)

    def __init__(self, path: Path, *, writable: bool) -> None:
        flags = (os.O_RDWR if writable else os.O_RDONLY) | os.O_CLOEXEC
        try:
            self._fd = os.open(path, flags)
        except FileNotFoundError as exc:
            raise UploadNotFound("upload data is missing") from exc

    def write_at(self, offset: int, data: Buffer) -> None:
        view = memoryview(data).cast("B")
        try:
            while view.nbytes:
                written = os.pwrite(self._fd, view, offset)
                view = view[written:]
                offset += written
        except OSError as exc:
            raise _space_error(exc) from exc

    def write_from_pipe(self, pipe: int, offset: int, size: int) -> None:
        """Move ``size`` bytes waiting in ``pipe`` to ``offset`` (``splice``, Linux only)."""
        end = offset + size
        try:
            while offset < end:
                try:
                    moved = os.splice(pipe, self._fd, end - offset, offset_dst=offset)
                except OSError as exc:
                    if exc.errno != errno.EINVAL:
                        raise
                    # This filesystem takes no splice: copy through memory instead.
                    self.write_at(offset, _read_exactly(pipe, end - offset))
                    return
                if moved == 0:
                    raise OSError(errno.EIO, "the pipe ran dry before its bytes were written")
                offset += moved
        except OSError as exc:
            raise _space_error(exc) from exc

    def read_into(self, offset: int, buffer: memoryview) -> int:
        return os.preadv(self._fd, [buffer], offset)

    def sync(self) -> None:
        try:
            os.fdatasync(self._fd)
        except OSError as exc:
            raise _space_error(exc) from exc

    def fileno(self) -> int:
        return self._fd

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class LocalStore:
    """Uploads as files in ``data_dir``, sessions as rows in ``data_dir/freight.db``."""

    def __init__(self, data_dir: Path, *, durable: bool = True) -> None:
        self.root = data_dir.resolve()
        self.uploads_dir = self.root / "uploads"
        self.files_dir = self.root / "files"
        for folder in (self.root, self.uploads_dir, self.files_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            self.root / "freight.db", check_same_thread=False, isolation_level=None
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        self._db.executescript(_SCHEMA)
        self._migrate()
        self._repair()

    # paths -------------------------------------------------------------------------------

    def _inside(self, folder: Path, name: str) -> Path:
        if not _ID_PATTERN.match(name.removesuffix(".part")):
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

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _write_row(self, session: UploadSession) -> None:
        row = _to_row(session)
        placeholders = ", ".join("?" for _ in _COLUMNS)
        with self._tx() as db:
            db.execute(
                f"INSERT OR REPLACE INTO uploads ({', '.join(_COLUMNS)}) VALUES ({placeholders})",
                row,
            )

    def create(self, session: UploadSession) -> None:
        path = self.part_path(session.id)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise _space_error(exc) from exc
        try:
            if session.length:
                preallocate(fd, session.length)
        except OSError as exc:
            path.unlink(missing_ok=True)
            raise _space_error(exc) from exc
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        finally:
            os.close(fd)
        try:
            self._write_row(session)
        except sqlite3.Error as exc:
            path.unlink(missing_ok=True)
            raise FreightError(f"metadata store failure: {exc}") from exc

    def reserve(self, session: UploadSession) -> None:
        if not session.length:
            return
        try:
            fd = os.open(self.part_path(session.id), os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError as exc:
            raise UploadNotFound("upload data is missing") from exc
        try:
            preallocate(fd, session.length)
        except OSError as exc:
            raise _space_error(exc) from exc
        finally:
            os.close(fd)

    def load(self, upload_id: str) -> UploadSession:
        if not _ID_PATTERN.match(upload_id):
            raise UploadNotFound("no such upload")
        with self._lock:
            row = self._db.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM uploads WHERE id = ?", (upload_id,)
            ).fetchone()
        if row is None:
            raise UploadNotFound("no such upload")
        return _from_row(row)

    def save(self, session: UploadSession) -> None:
        try:
            self._write_row(session)
        except sqlite3.Error as exc:
            raise FreightError(f"metadata store failure: {exc}") from exc

    def list_sessions(self) -> list[UploadSession]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM uploads ORDER BY created"
            ).fetchall()
        return [_from_row(row) for row in rows]

    def expired_ids(self, now: float) -> list[str]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id FROM uploads WHERE expires IS NOT NULL AND expires < ?", (now,)
            ).fetchall()
        return [row[0] for row in rows]

    # bytes -------------------------------------------------------------------------------

    def open_part(self, session: UploadSession) -> LocalPartFile:
        part = self.part_path(session.id)
        if part.exists() or not self.file_path(session.id).exists():
            return LocalPartFile(part, writable=True)
        # Finished on disk but not yet in the row (a crash in between): read from the file.
        return LocalPartFile(self.file_path(session.id), writable=True)

    def open_file(self, upload_id: str) -> LocalPartFile:
        return LocalPartFile(self.file_path(upload_id), writable=False)

    def finish(self, session: UploadSession) -> None:
        part = self.part_path(session.id)
        target = self.file_path(session.id)
        if part.exists():
            os.rename(part, target)
            _sync_dir(self.files_dir)
            _sync_dir(self.uploads_dir)
        self.save(session)

    def delete(self, upload_id: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM uploads WHERE id = ?", (upload_id,))
        for path in (self.part_path(upload_id), self.file_path(upload_id)):
            path.unlink(missing_ok=True)

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _migrate(self) -> None:
        present = {row[1] for row in self._db.execute("PRAGMA table_info(uploads)")}
        for name, kind in _ADDED_COLUMNS:
            if name not in present:
                self._db.execute(f"ALTER TABLE uploads ADD COLUMN {name} {kind}")

    def _repair(self) -> None:
        """Drop files that have no row: a crash came between a file and its row changing."""
        known = {s.id for s in self.list_sessions()}
        for entry in self.uploads_dir.iterdir():
            if entry.suffix == ".part" and entry.stem not in known:
                entry.unlink(missing_ok=True)
        for entry in self.files_dir.iterdir():
            if entry.name not in known:
                entry.unlink(missing_ok=True)


def _sync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _to_row(session: UploadSession) -> tuple[Any, ...]:
    return (
        session.id,
        session.length,
        json.dumps(session.metadata),
        json.dumps(session.received.to_list()),
        session.state.value,
        session.hashed_offset,
        session.hash_state,
        session.created,
        session.expires,
        session.concat_kind.value if session.concat_kind else None,
        json.dumps(list(session.concat_parts)),
        session.sha256,
        session.finished,
        session.used_by,
    )


def _from_row(row: tuple[Any, ...]) -> UploadSession:
    values = dict(zip(_COLUMNS, row, strict=True))
    return UploadSession(
        id=values["id"],
        length=values["length"],
        metadata=json.loads(values["metadata"]),
        created=values["created"],
        expires=values["expires"],
        received=RangeSet.from_list(json.loads(values["received"])),
        state=UploadState(values["state"]),
        hashed_offset=values["hashed_offset"],
        hash_state=values["hash_state"],
        concat_kind=ConcatKind(values["concat_kind"]) if values["concat_kind"] else None,
        concat_parts=tuple(json.loads(values["concat_parts"])),
        sha256=values["sha256"],
        finished=values["finished"],
        used_by=values["used_by"],
    )
