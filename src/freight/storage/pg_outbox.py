"""The fleet's hook outbox: the ``freight_hook_outbox`` table (see :mod:`.local_outbox` for
the local one; the same rows).

An entry is added by the transaction that changes the upload it reports
(:meth:`~freight.storage.pg_sessions.PgSessions.update` and ``delete``). Every node runs a
delivery worker; :data:`TAKE_DUE` leases the rows it returns with ``FOR UPDATE SKIP
LOCKED``, so two nodes taking at once get different rows and never wait for each other,
and the lease (not an open transaction) keeps a row one node's while it is delivered: a
node that dies mid-delivery leaves it to another once the lease runs out.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from freight.core.ports import OutboxEntry

if TYPE_CHECKING:
    import asyncpg
    from asyncpg.pool import PoolConnectionProxy

__all__ = ["DEPTH", "FORGET", "OUTBOX_MIGRATION", "POSTPONE", "TAKE_DUE", "add_entries", "entries"]

OUTBOX_MIGRATION: Final = (
    """
    CREATE TABLE freight_hook_outbox (
        key text PRIMARY KEY,
        event text NOT NULL,
        upload_id text NOT NULL,
        payload text NOT NULL,
        created double precision NOT NULL,
        attempts integer NOT NULL DEFAULT 0,
        due double precision NOT NULL,
        lease_until double precision,
        last_error text
    )
    """,
    "CREATE INDEX freight_hook_outbox_due ON freight_hook_outbox (due)",
)

_INSERT: Final = (
    "INSERT INTO freight_hook_outbox (key, event, upload_id, payload, created, due)"
    " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (key) DO NOTHING"
)
TAKE_DUE: Final = """
UPDATE freight_hook_outbox SET lease_until = $1 + $3
WHERE key IN (
    SELECT key FROM freight_hook_outbox
    WHERE due <= $1 AND (lease_until IS NULL OR lease_until < $1)
    ORDER BY due, created LIMIT $2
    FOR UPDATE SKIP LOCKED
)
RETURNING key, event, upload_id, payload, created, attempts, due
"""
FORGET: Final = "DELETE FROM freight_hook_outbox WHERE key = $1"
POSTPONE: Final = (
    "UPDATE freight_hook_outbox SET attempts = attempts + 1, due = $2, lease_until = NULL,"
    " last_error = $3 WHERE key = $1"
)
DEPTH: Final = "SELECT count(*) FROM freight_hook_outbox"


async def add_entries(
    connection: asyncpg.Connection | PoolConnectionProxy, outbox: Sequence[OutboxEntry]
) -> None:
    """Add ``outbox`` inside the caller's transaction; a key already waiting stays as is."""
    await connection.executemany(
        _INSERT, [(e.key, e.event, e.upload_id, e.payload, e.created, e.due) for e in outbox]
    )


def entries(rows: Sequence[asyncpg.Record]) -> list[OutboxEntry]:
    """Rows of :data:`TAKE_DUE`, oldest first (``RETURNING`` keeps no order)."""
    taken = [
        OutboxEntry(
            key=row["key"],
            event=row["event"],
            upload_id=row["upload_id"],
            payload=row["payload"],
            created=row["created"],
            attempts=row["attempts"],
            due=row["due"],
        )
        for row in rows
    ]
    return sorted(taken, key=lambda e: (e.due, e.created))
