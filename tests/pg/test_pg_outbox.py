"""The hook outbox in PostgreSQL: a node taking entries never waits for, nor takes, the rows
another node is taking at that moment; and the outbox table arrives with the current schema."""

from __future__ import annotations

import asyncio

import asyncpg

from freight.core.ports import OutboxEntry
from freight.storage.pg_schema import SCHEMA_VERSION
from freight.storage.pg_sessions import PgSessions
from tests.pg.test_pg_sessions import session


async def test_taking_skips_rows_another_node_holds(pg_sessions: PgSessions, pg_dsn: str) -> None:
    for n in range(4):
        await pg_sessions.create(session(f"u{n}"))
        entry = OutboxEntry(f"k{n}", "post-finish", f"u{n}", "{}", float(n), due=float(n))
        await pg_sessions.delete(f"u{n}", outbox=[entry])
    other_node = await asyncpg.connect(pg_dsn)
    try:
        async with other_node.transaction():
            # Another node's take, caught between locking its rows and leasing them.
            await other_node.execute(
                "SELECT key FROM freight_hook_outbox WHERE key IN ('k0', 'k1') FOR UPDATE"
            )
            taken = await asyncio.wait_for(pg_sessions.take_due(100.0, 10, lease=30.0), 5)
            assert [e.key for e in taken] == ["k2", "k3"]
    finally:
        await other_node.close()
    # Its transaction ended without leasing them: they are free again.
    assert [e.key for e in await pg_sessions.take_due(100.0, 10, lease=30.0)] == ["k0", "k1"]


async def test_the_outbox_table_is_in_the_current_schema(
    pg_sessions: PgSessions, pg_dsn: str
) -> None:
    connection = await asyncpg.connect(pg_dsn)
    try:
        version = await connection.fetchval(
            "SELECT version FROM freight_schema WHERE component = 'sessions'"
        )
        columns = await connection.fetch(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_name = 'freight_hook_outbox' ORDER BY ordinal_position"
        )
    finally:
        await connection.close()
    assert version == SCHEMA_VERSION
    assert [c["column_name"] for c in columns][:3] == ["key", "event", "upload_id"]
