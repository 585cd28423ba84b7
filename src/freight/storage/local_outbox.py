"""The local backend's hook outbox: the ``hook_outbox`` table of ``freight.db``.

One row per hook event waiting for delivery (:class:`~freight.core.ports.OutboxEntry`),
keyed by its idempotency key. Rows are added by the same ``BEGIN IMMEDIATE`` transaction
that changes the upload they report (:meth:`SessionTable.update`, :meth:`SessionTable.remove`),
so a crash either keeps both or neither. ``lease_until`` marks a row a delivery worker is
working on; a worker that dies leaves it to be taken again once it has run out.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from freight.core.ports import OutboxEntry

__all__ = ["OUTBOX_SCHEMA", "add_entries", "depth", "forget", "postpone", "take_due"]

OUTBOX_SCHEMA = """
CREATE TABLE IF NOT EXISTS hook_outbox (
    key TEXT PRIMARY KEY,
    event TEXT NOT NULL,
    upload_id TEXT NOT NULL,
    payload TEXT NOT NULL,
    created REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    due REAL NOT NULL,
    lease_until REAL,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS hook_outbox_due ON hook_outbox (due);
"""


def add_entries(db: sqlite3.Connection, entries: Sequence[OutboxEntry]) -> None:
    """Add ``entries`` inside the caller's transaction; a key already waiting stays as is."""
    db.executemany(
        "INSERT OR IGNORE INTO hook_outbox (key, event, upload_id, payload, created, due)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        [(e.key, e.event, e.upload_id, e.payload, e.created, e.due) for e in entries],
    )


def take_due(db: sqlite3.Connection, now: float, limit: int, lease: float) -> list[OutboxEntry]:
    rows = db.execute(
        "SELECT key, event, upload_id, payload, created, attempts, due FROM hook_outbox"
        " WHERE due <= ? AND (lease_until IS NULL OR lease_until < ?)"
        " ORDER BY due, created LIMIT ?",
        (now, now, limit),
    ).fetchall()
    db.executemany(
        "UPDATE hook_outbox SET lease_until = ? WHERE key = ?", [(now + lease, r[0]) for r in rows]
    )
    return [OutboxEntry(*row) for row in rows]


def forget(db: sqlite3.Connection, key: str) -> None:
    db.execute("DELETE FROM hook_outbox WHERE key = ?", (key,))


def postpone(db: sqlite3.Connection, key: str, due: float, error: str) -> None:
    db.execute(
        "UPDATE hook_outbox SET attempts = attempts + 1, due = ?, lease_until = NULL,"
        " last_error = ? WHERE key = ?",
        (due, error[:500], key),
    )


def depth(db: sqlite3.Connection) -> int:
    return int(db.execute("SELECT COUNT(*) FROM hook_outbox").fetchone()[0])
