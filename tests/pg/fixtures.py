"""pytest fixtures over a throwaway PostgreSQL cluster (:mod:`tests.pg_server`).

``pg_cluster`` is one cluster for the whole session; ``pg_dsn`` a fresh database in it for
each test; ``pg_sessions`` a :class:`~freight.storage.pg_sessions.PgSessions` on that
database. Without PostgreSQL's server binaries they skip (and CI turns a skip into a
failure: ``tools/system-deps install`` installs them). Import them into a conftest.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from freight.storage.pg_sessions import PgSessions, open_pg_sessions
from tests.pg_server import PgCluster, find_bindir, start_cluster

__all__ = ["new_cluster", "pg_cluster", "pg_dsn", "pg_sessions"]

_database_numbers = itertools.count(1)


def new_cluster() -> PgCluster:
    """A started cluster of one's own (the caller removes it); skips without PostgreSQL."""
    if find_bindir() is None:
        pytest.skip("PostgreSQL server binaries not found (tools/system-deps install)")
    cluster, _ = start_cluster()
    return cluster


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    cluster = new_cluster()
    try:
        yield cluster
    finally:
        cluster.remove()


@pytest.fixture
async def pg_dsn(pg_cluster: PgCluster) -> AsyncIterator[str]:
    name = f"test_{next(_database_numbers)}"
    admin = await asyncpg.connect(pg_cluster.dsn())
    try:
        await admin.execute(f"CREATE DATABASE {name}")
        yield pg_cluster.dsn(name)
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()


@pytest.fixture
async def pg_sessions(pg_dsn: str) -> AsyncIterator[PgSessions]:
    sessions = await open_pg_sessions(pg_dsn)
    try:
        yield sessions
    finally:
        await sessions.close()
