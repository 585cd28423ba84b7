"""PgSessions when the database goes away, stalls or is shared: freight's typed errors,
never a raw driver exception, and recovery once the database is back."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest

from freight.core.session import UploadSession
from freight.errors import FreightError, StorageUnavailable
from freight.storage.pg_pool import PoolSettings
from freight.storage.pg_schema import SCHEMA_VERSION
from freight.storage.pg_sessions import PgSessions, open_pg_sessions
from tests.pg.fixtures import new_cluster
from tests.pg_server import free_port

NOW = 1_700_000_000.0


def session(upload_id: str) -> UploadSession:
    return UploadSession(id=upload_id, length=100, metadata={}, created=NOW, expires=None)


async def _wait_for_lock_wait(admin: asyncpg.Connection, application: str) -> int:
    """The backend pid of ``application``'s connection once it waits on a lock."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pid = await admin.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1"
            " AND wait_event_type = 'Lock'",
            application,
        )
        if pid is not None:
            return int(pid)
        await asyncio.sleep(0.02)
    raise AssertionError("the statement never waited on the row lock")


async def test_a_connection_killed_mid_statement_is_storage_unavailable(pg_dsn: str) -> None:
    settings = PoolSettings(application_name="victim")
    sessions = await open_pg_sessions(pg_dsn, settings)
    admin = await asyncpg.connect(pg_dsn)
    try:
        await sessions.create(session("u"))
        # Hold the row so the node's statement is in flight when its connection dies.
        locker = admin.transaction()
        await locker.start()
        await admin.execute("SELECT 1 FROM freight_uploads WHERE id = 'u' FOR UPDATE")
        pending = asyncio.create_task(sessions.record_received("u", 0, 10, expires=None))
        pid = await _wait_for_lock_wait(admin, "victim")
        await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
        with pytest.raises(StorageUnavailable) as caught:
            await asyncio.wait_for(pending, 10)
        assert caught.value.code == "ERR_STORAGE_UNAVAILABLE" and caught.value.status == 503
        await locker.rollback()
        # The pool replaces the dead connection: the next call just works.
        assert (await sessions.record_received("u", 0, 10, expires=None)).total() == 10
    finally:
        await admin.close()
        await sessions.close()


async def test_a_statement_stuck_on_a_lock_times_out_as_storage_unavailable(
    pg_dsn: str,
) -> None:
    sessions = await open_pg_sessions(pg_dsn, PoolSettings(statement_timeout=0.3))
    admin = await asyncpg.connect(pg_dsn)
    try:
        await sessions.create(session("u"))
        async with admin.transaction():
            await admin.execute("SELECT 1 FROM freight_uploads WHERE id = 'u' FOR UPDATE")
            began = time.monotonic()
            with pytest.raises(StorageUnavailable, match="QueryCanceled"):
                await sessions.record_received("u", 0, 10, expires=None)
            assert time.monotonic() - began < 5
    finally:
        await admin.close()
        await sessions.close()


async def test_a_database_restart_is_storage_unavailable_then_recovers() -> None:
    cluster = new_cluster()  # its own: the shared one stays up for the other tests
    try:
        sessions = await open_pg_sessions(cluster.dsn(), PoolSettings(connect_timeout=3))
        try:
            await sessions.create(session("u"))
            cluster.stop(mode="immediate")
            for _ in range(3):  # a dead pooled connection, then refused new ones
                with pytest.raises(StorageUnavailable):
                    await sessions.load("u")
            cluster.start()
            assert (await sessions.load("u")).id == "u"
        finally:
            await sessions.close()
    finally:
        cluster.remove()


async def test_an_unreachable_database_is_storage_unavailable_at_open() -> None:
    dsn = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    with pytest.raises(StorageUnavailable):
        await open_pg_sessions(dsn, PoolSettings(connect_timeout=2))


async def test_nodes_opening_at_once_create_the_schema_once(pg_dsn: str) -> None:
    nodes: list[PgSessions] = list(
        await asyncio.gather(*(open_pg_sessions(pg_dsn) for _ in range(4)))
    )
    try:
        await nodes[0].create(session("u"))
        assert (await nodes[3].load("u")).id == "u"
        again = await open_pg_sessions(pg_dsn)  # and reopening changes nothing
        await again.close()
        assert len(await nodes[1].list_all()) == 1
    finally:
        for node in nodes:
            await node.close()
    admin = await asyncpg.connect(pg_dsn)
    try:
        rows = await admin.fetch("SELECT component, version FROM freight_schema")
        assert [tuple(row) for row in rows] == [("sessions", SCHEMA_VERSION)]
        await admin.execute("UPDATE freight_schema SET version = version + 1")
    finally:
        await admin.close()
    with pytest.raises(FreightError, match="schema has version"):
        await open_pg_sessions(pg_dsn)
