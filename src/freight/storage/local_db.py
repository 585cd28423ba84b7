"""The local backend's session table: one SQLite (WAL) row per upload, finished or not.

Besides the session itself a row keeps ``received_bytes`` (what its received ranges add up
to) and ``client`` (the address that created it), so what unfinished uploads still need, in
all and per client, is one indexed aggregate instead of a scan of every session in Python.
``chunk_size`` and ``declared_sha256`` are the creating protocol's own state, kept out of
the client's ``metadata`` column; ``owner`` is the user who created it (users and tokens
live in the same file, :mod:`freight.storage.local_users`).

A write the disk has no room for (``SQLITE_FULL``) first spends the space reserve it is
given (:class:`~freight.storage.local_files.SpaceReserve`) and tries once more; after that
it is :class:`~freight.errors.InsufficientStorage`, never a generic failure.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import freight.storage.local_outbox as outbox_rows
from freight.core.ports import ListingKind, OutboxEntry, PageKey, SessionField, UnfinishedTotals
from freight.core.rangeset import RangeSet
from freight.core.session import UploadSession, UploadState
from freight.errors import FreightError, InsufficientStorage, UploadNotFound
from freight.storage.local_files import DISK_FULL
from freight.storage.local_rows import COLUMNS, from_row, private_state, to_row, update_values

__all__ = ["SessionTable", "immediate_transaction", "private_state"]

_T = TypeVar("_T")
# How long a writer waits for another connection's transaction (another process) to end.
_BUSY_TIMEOUT = 30.0

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
    client TEXT,
    received_bytes INTEGER NOT NULL DEFAULT 0,
    used_by TEXT,
    chunk_size INTEGER,
    declared_sha256 TEXT,
    owner TEXT
);
"""
# Created after the columns a database from an older version lacks were added.
_INDEXES = """
CREATE INDEX IF NOT EXISTS uploads_state ON uploads (state, expires);
CREATE INDEX IF NOT EXISTS uploads_listing ON uploads (state, created, id);
CREATE INDEX IF NOT EXISTS uploads_client ON uploads (client, state);
CREATE INDEX IF NOT EXISTS uploads_owner ON uploads (owner, state, created, id);
CREATE INDEX IF NOT EXISTS uploads_digest ON uploads (length, sha256) WHERE state = 'finished';
"""
_ADDED_COLUMNS = {
    "client": "TEXT",
    "received_bytes": "INTEGER NOT NULL DEFAULT 0",
    "used_by": "TEXT",  # a partial upload: the final concatenation it belongs to
    "chunk_size": "INTEGER",
    "declared_sha256": "TEXT",
    # The user who created it; older versions' uploads have none (admins see them).
    "owner": "TEXT",
}

_SELECT = f"SELECT {', '.join(COLUMNS)} FROM uploads"
_UNFINISHED = "state IN ('receiving', 'assembling') AND (expires IS NULL OR expires >= ?)"
_LISTINGS: dict[ListingKind, str] = {
    "files": "state = 'finished' AND (concat_kind IS NULL OR concat_kind != 'partial')",
    "uploads": "state = 'receiving' AND (expires IS NULL OR expires >= :now)",
}


@contextlib.contextmanager
def immediate_transaction(
    db: sqlite3.Connection, lock: threading.Lock
) -> Iterator[sqlite3.Connection]:
    """One write transaction on ``db`` (taking the write lock at once), under ``lock``:
    committed when the block ends, rolled back if it raises."""
    with lock:
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            raise


class SessionTable:
    """Rows of ``freight.db``; every method is safe to call from any thread."""

    def __init__(self, path: Path, *, durable: bool, on_full: Callable[[], bool]) -> None:
        self._lock = threading.Lock()
        self._on_full = on_full
        self._db = sqlite3.connect(
            path, timeout=_BUSY_TIMEOUT, check_same_thread=False, isolation_level=None
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        self._db.executescript(_SCHEMA)
        self._db.executescript(outbox_rows.OUTBOX_SCHEMA)
        self._migrate()
        self._db.executescript(_INDEXES)

    def _migrate(self) -> None:
        present = {row[1] for row in self._db.execute("PRAGMA table_info(uploads)")}
        missing = [name for name in _ADDED_COLUMNS if name not in present]
        for name in missing:
            self._db.execute(f"ALTER TABLE uploads ADD COLUMN {name} {_ADDED_COLUMNS[name]}")
        if "received_bytes" in missing:
            rows = self._db.execute("SELECT id, received FROM uploads").fetchall()
            with self._tx() as db:
                for upload_id, received in rows:
                    total = RangeSet.from_list(json.loads(received)).total()
                    db.execute(
                        "UPDATE uploads SET received_bytes = ? WHERE id = ?", (total, upload_id)
                    )
        if "declared_sha256" in missing:
            self._move_private_metadata()

    def _move_private_metadata(self) -> None:
        """Older versions kept the chunk API's ``chunk_size`` and a declared ``sha256`` in
        the client's metadata; move them to their columns (see :func:`private_state`)."""
        rows = self._db.execute("SELECT id, metadata FROM uploads").fetchall()
        with self._tx() as db:
            for upload_id, text in rows:
                moved = private_state(json.loads(text))
                if moved is not None:
                    metadata, chunk_size, sha256 = moved
                    db.execute(
                        "UPDATE uploads SET metadata = ?, chunk_size = ?, declared_sha256 = ?"
                        " WHERE id = ?",
                        (json.dumps(metadata), chunk_size, sha256, upload_id),
                    )

    def _tx(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return immediate_transaction(self._db, self._lock)

    def _write(self, statement: str, parameters: tuple[Any, ...]) -> None:
        """Run one writing statement; a full disk spends the reserve and tries once more."""
        self._transaction(lambda db: db.execute(statement, parameters))

    def _transaction(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``work`` in one write transaction; a full disk spends the reserve and tries
        once more. Typed errors ``work`` raises pass through (after a rollback)."""
        for attempt in range(2):
            try:
                with self._tx() as db:
                    return work(db)
            except sqlite3.Error as exc:
                if not _disk_full(exc):
                    raise FreightError(f"metadata store failure: {exc}") from exc
                if attempt or not self._on_full():
                    raise InsufficientStorage(DISK_FULL) from exc
        raise AssertionError("unreachable")

    def put(self, session: UploadSession) -> None:
        placeholders = ", ".join("?" for _ in COLUMNS)
        self._write(
            f"INSERT OR REPLACE INTO uploads ({', '.join(COLUMNS)}) VALUES ({placeholders})",
            to_row(session),
        )

    def insert(self, session: UploadSession) -> None:
        """A new row; an id already present is a bug (ids are random), never overwritten."""
        placeholders = ", ".join("?" for _ in COLUMNS)
        try:
            self._write(
                f"INSERT INTO uploads ({', '.join(COLUMNS)}) VALUES ({placeholders})",
                to_row(session),
            )
        except FreightError as exc:
            if isinstance(exc.__cause__, sqlite3.IntegrityError):
                raise FreightError("an upload with this id already exists") from exc
            raise

    def record_received(
        self, upload_id: str, start: int, end: int, expires: float | None
    ) -> RangeSet:
        """Merge ``[start, end)`` into the row's ranges and set ``expires``: one
        ``BEGIN IMMEDIATE`` transaction, so no other connection's merge falls in between."""

        def merge(db: sqlite3.Connection) -> RangeSet:
            row = db.execute("SELECT received FROM uploads WHERE id = ?", (upload_id,)).fetchone()
            if row is None:
                raise UploadNotFound("no such upload")
            received = RangeSet.from_list(json.loads(row[0]))
            received.add(start, end)
            db.execute(
                "UPDATE uploads SET received = ?, received_bytes = ?, expires = ? WHERE id = ?",
                (json.dumps(received.to_list()), received.total(), expires, upload_id),
            )
            return received

        if start < 0 or end < start:
            raise ValueError(f"bad range [{start}, {end})")
        return self._transaction(merge)

    def update(
        self,
        session: UploadSession,
        fields: Collection[SessionField],
        expect: UploadState | None,
        outbox: Sequence[OutboxEntry] = (),
    ) -> bool:
        """Write only ``fields`` of ``session``; with ``expect``, only while the row's state
        is still ``expect``. Returns whether the row changed; a missing row is not found.
        ``outbox`` entries are added in the same transaction when the row changed."""
        values = update_values(session, fields)
        assignments = ", ".join(f"{name} = ?" for name in values) or "state = state"
        sql = f"UPDATE uploads SET {assignments} WHERE id = ?"
        parameters = [*values.values(), session.id]
        if expect is not None:
            sql += " AND state = ?"
            parameters.append(expect.value)

        def write(db: sqlite3.Connection) -> bool:
            if db.execute(sql, parameters).rowcount:
                outbox_rows.add_entries(db, outbox)
                return True
            if db.execute("SELECT 1 FROM uploads WHERE id = ?", (session.id,)).fetchone():
                return False
            raise UploadNotFound("no such upload")

        return self._transaction(write)

    def remove(self, upload_id: str, outbox: Sequence[OutboxEntry] = ()) -> None:
        """Delete the row; ``outbox`` entries are added in the same transaction if it was
        there."""

        def delete(db: sqlite3.Connection) -> None:
            if db.execute("DELETE FROM uploads WHERE id = ?", (upload_id,)).rowcount:
                outbox_rows.add_entries(db, outbox)

        self._transaction(delete)

    def take_due(self, now: float, limit: int, lease: float) -> list[OutboxEntry]:
        return self._transaction(lambda db: outbox_rows.take_due(db, now, limit, lease))

    def outbox_delivered(self, key: str) -> None:
        self._transaction(lambda db: outbox_rows.forget(db, key))

    def outbox_retry(self, key: str, due: float, error: str) -> None:
        self._transaction(lambda db: outbox_rows.postpone(db, key, due, error))

    def outbox_depth(self) -> int:
        with self._lock:
            try:
                return outbox_rows.depth(self._db)
            except sqlite3.Error as exc:
                raise FreightError(f"metadata store failure: {exc}") from exc

    def _query(self, sql: str, parameters: tuple[Any, ...] | dict[str, Any] = ()) -> list[Any]:
        with self._lock:
            try:
                return self._db.execute(sql, parameters).fetchall()
            except sqlite3.Error as exc:
                raise FreightError(f"metadata store failure: {exc}") from exc

    def get(self, upload_id: str) -> UploadSession | None:
        rows = self._query(f"{_SELECT} WHERE id = ?", (upload_id,))
        return from_row(rows[0]) if rows else None

    def all(self) -> list[UploadSession]:
        return [from_row(row) for row in self._query(f"{_SELECT} ORDER BY created, id")]

    def ids(self) -> set[str]:
        return {row[0] for row in self._query("SELECT id FROM uploads")}

    def expired_ids(self, now: float) -> list[str]:
        rows = self._query(
            "SELECT id FROM uploads WHERE expires IS NOT NULL AND expires < ?", (now,)
        )
        return [row[0] for row in rows]

    def unfinished_totals(self, now: float, client: str | None) -> UnfinishedTotals:
        """Unfinished, unexpired uploads (``client``'s only, if given) and what they need."""
        sql = (
            "SELECT COUNT(*), COALESCE(SUM(MAX(COALESCE(length, 0) - received_bytes, 0)), 0)"
            f" FROM uploads WHERE {_UNFINISHED}"
        )
        parameters: tuple[Any, ...] = (now,)
        if client is not None:
            sql += " AND client = ?"
            parameters = (now, client)
        count, pending = self._query(sql, parameters)[0]
        return UnfinishedTotals(count=int(count), pending_bytes=int(pending))

    def find_finished(
        self, size: int, sha256: str | None, owner: str | None = None
    ) -> UploadSession | None:
        """The oldest listed file of ``size`` bytes with this SHA-256 (any with None), by
        the ``uploads_digest`` index."""
        # Named: without statistics SQLite would take the listing index for its order and
        # read every finished file.
        select = _SELECT.replace(" FROM uploads", " FROM uploads INDEXED BY uploads_digest")
        sql = f"{select} WHERE {_LISTINGS['files']} AND length = :size"
        if sha256 is not None:
            sql += " AND sha256 = :sha256"
        if owner is not None:
            sql += " AND owner = :owner"
        sql += " ORDER BY created, id LIMIT 1"
        rows = self._query(sql, {"sha256": sha256, "size": size, "owner": owner})
        return from_row(rows[0]) if rows else None

    def page(
        self,
        kind: ListingKind,
        after: PageKey | None,
        limit: int,
        now: float,
        owner: str | None = None,
    ) -> list[UploadSession]:
        """Up to ``limit`` sessions of a listing, ordered by creation, after ``after``."""
        sql = f"{_SELECT} WHERE {_LISTINGS[kind]}"
        parameters: dict[str, Any] = {"now": now, "limit": limit}
        if owner is not None:
            sql += " AND owner = :owner"
            parameters["owner"] = owner
        if after is not None:
            sql += " AND (created, id) > (:created, :id)"
            parameters.update(created=after[0], id=after[1])
        rows = self._query(f"{sql} ORDER BY created, id LIMIT :limit", parameters)
        return [from_row(row) for row in rows]

    def work_ids(self, limit: int) -> list[str]:
        """Uploads the server should take further by itself: complete but not finished, or
        concatenations waiting to be assembled."""
        rows = self._query(
            "SELECT id FROM uploads WHERE (state = 'receiving' AND length IS NOT NULL"
            " AND received_bytes >= length) OR state = 'assembling' ORDER BY created LIMIT ?",
            (limit,),
        )
        return [row[0] for row in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _disk_full(exc: sqlite3.Error) -> bool:
    return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or (
        "disk is full" in str(exc)
    )
