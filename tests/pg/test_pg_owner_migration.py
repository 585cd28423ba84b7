"""A PostgreSQL database from the version before users is migrated: old uploads have no
owner, and a session table opened afterwards reads and writes owners."""

from __future__ import annotations

import asyncpg

from freight.core.session import UploadSession
from freight.storage.pg_schema import MIGRATIONS, SCHEMA_VERSION, ensure_schema
from freight.storage.pg_sessions import open_pg_sessions


async def test_version_1_gains_the_owner_column(pg_dsn: str) -> None:
    connection = await asyncpg.connect(pg_dsn)
    try:
        await ensure_schema(connection, migrations=MIGRATIONS[:1])  # as the older version
        await connection.execute(
            "INSERT INTO freight_uploads (id, length, metadata, state, hashed_offset, created)"
            " VALUES ('old', 10, '{}', 'receiving', 0, 1.0)"
        )
    finally:
        await connection.close()
    sessions = await open_pg_sessions(pg_dsn)
    try:
        await sessions.create(
            UploadSession(id="new", length=5, metadata={}, created=2.0, expires=None, owner="bob")
        )
        assert {s.id: s.owner for s in await sessions.list_all()} == {"old": None, "new": "bob"}
        assert [s.id for s in await sessions.list_page("uploads", None, 9, 0.0, "bob")] == ["new"]
    finally:
        await sessions.close()
    check = await asyncpg.connect(pg_dsn)
    try:
        version = await check.fetchval(
            "SELECT version FROM freight_schema WHERE component = 'sessions'"
        )
    finally:
        await check.close()
    assert version == SCHEMA_VERSION
