"""The local backend's session table: one SQLite (WAL) row per upload, finished or not.

Besides the session itself a row keeps ``received_bytes`` (what its received ranges add up
to) and ``client`` (the address that created it), so what unfinished uploads still need, in
all and per client, is one indexed aggregate instead of a scan of every session in Python.
``chunk_size`` and ``declared_sha256`` are the creating protocol's own state, kept out of
the client's ``metadata`` column.

A write the disk has no room for (``SQLITE_FULL``) first spends the space reserve it is
given (:class:`~freight.storage.local_files.SpaceReserve`) and tries once more; after that
it is :class:`~freight.errors.InsufficientStorage`, never a generic failure.
"""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from freight.core.ports import ListingKind, PageKey, UnfinishedTotals
from freight.core.rangeset import RangeSet
from freight.core.session import ConcatKind, UploadSession, UploadState
from freight.errors import FreightError, InsufficientStorage
from freight.storage.local_files import DISK_FULL

__all__ = ["SessionTable", "private_state"]

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
    declared_sha256 TEXT
);
"""
# Created after the columns a database from an older version lacks were added.
_INDEXES = """
CREATE INDEX IF NOT EXISTS uploads_state ON uploads (state, expires);
CREATE INDEX IF NOT EXISTS uploads_listing ON uploads (state, created, id);
CREATE INDEX IF NOT EXISTS uploads_client ON uploads (client, state);
"""
_ADDED_COLUMNS = {
    "client": "TEXT",
    "received_bytes": "INTEGER NOT NULL DEFAULT 0",
    "used_by": "TEXT",  # a partial upload: the final concatenation it belongs to
    "chunk_size": "INTEGER",
    "declared_sha256": "TEXT",
}

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
    "client",
    "received_bytes",
    "used_by",
    "chunk_size",
    "declared_sha256",
)
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM uploads"
_UNFINISHED = "state IN ('receiving', 'assembling') AND (expires IS NULL OR expires >= ?)"
_LISTINGS: dict[ListingKind, str] = {
    "files": "state = 'finished' AND (concat_kind IS NULL OR concat_kind != 'partial')",
    "uploads": "state = 'receiving' AND (expires IS NULL OR expires >= :now)",
}


class SessionTable:
    """Rows of ``freight.db``; every method is safe to call from any thread."""

    def __init__(self, path: Path, *, durable: bool, on_full: Callable[[], bool]) -> None:
        self._lock = threading.Lock()
        self._on_full = on_full
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        self._db.executescript(_SCHEMA)
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

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        self._db.execute("ROLLBACK")
                raise

    def _write(self, statement: str, parameters: tuple[Any, ...]) -> None:
        """Run one writing statement; a full disk spends the reserve and tries once more."""
        for attempt in range(2):
            try:
                with self._tx() as db:
                    db.execute(statement, parameters)
                return
            except sqlite3.Error as exc:
                if not _disk_full(exc):
                    raise FreightError(f"metadata store failure: {exc}") from exc
                if attempt or not self._on_full():
                    raise InsufficientStorage(DISK_FULL) from exc
        raise AssertionError("unreachable")

    def put(self, session: UploadSession) -> None:
        placeholders = ", ".join("?" for _ in _COLUMNS)
        self._write(
            f"INSERT OR REPLACE INTO uploads ({', '.join(_COLUMNS)}) VALUES ({placeholders})",
            _to_row(session),
        )

    def remove(self, upload_id: str) -> None:
        self._write("DELETE FROM uploads WHERE id = ?", (upload_id,))

    def _query(self, sql: str, parameters: tuple[Any, ...] | dict[str, Any] = ()) -> list[Any]:
        with self._lock:
            return self._db.execute(sql, parameters).fetchall()

    def get(self, upload_id: str) -> UploadSession | None:
        rows = self._query(f"{_SELECT} WHERE id = ?", (upload_id,))
        return _from_row(rows[0]) if rows else None

    def all(self) -> list[UploadSession]:
        return [_from_row(row) for row in self._query(f"{_SELECT} ORDER BY created")]

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

    def page(
        self, kind: ListingKind, after: PageKey | None, limit: int, now: float
    ) -> list[UploadSession]:
        """Up to ``limit`` sessions of a listing, ordered by creation, after ``after``."""
        sql = f"{_SELECT} WHERE {_LISTINGS[kind]}"
        parameters: dict[str, Any] = {"now": now, "limit": limit}
        if after is not None:
            sql += " AND (created, id) > (:created, :id)"
            parameters.update(created=after[0], id=after[1])
        rows = self._query(f"{sql} ORDER BY created, id LIMIT :limit", parameters)
        return [_from_row(row) for row in rows]

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
        session.client,
        session.received.total(),
        session.used_by,
        session.chunk_size,
        session.declared_sha256,
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
        client=values["client"],
        used_by=values["used_by"],
        chunk_size=values["chunk_size"],
        declared_sha256=values["declared_sha256"],
    )


_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


def private_state(
    metadata: dict[str, str | None],
) -> tuple[dict[str, str | None], int | None, str | None] | None:
    """``(metadata, chunk_size, declared_sha256)`` of a row an older version wrote, or None
    for a row to leave alone.

    Rows do not say which protocol created them, so only the exact shapes those versions
    wrote are moved: the chunk API's ``{filename, chunk_size[, sha256]}`` and TCP's or
    WebSocket's ``{filename, sha256}``, with a positive ``chunk_size`` and a 64-digit hex
    ``sha256``. A tus client that sent exactly such keys cannot be told apart; those
    versions already treated its ``sha256`` as declared (checked at finishing) and let the
    chunk API write to it, so reading it that way changes nothing it relied on.
    """
    keys = set(metadata)
    sha256 = metadata.get("sha256")
    chunk_size = metadata.get("chunk_size")
    if "sha256" in keys and not (sha256 and _HEX64.fullmatch(sha256)):
        return None
    if keys in ({"filename", "chunk_size"}, {"filename", "chunk_size", "sha256"}):
        if not (chunk_size and chunk_size.isdigit() and int(chunk_size) > 0):
            return None
        size: int | None = int(chunk_size)
    elif keys == {"filename", "sha256"}:
        size = None
    else:
        return None
    kept = {"filename": metadata["filename"]}
    return kept, size, sha256.lower() if sha256 else None
