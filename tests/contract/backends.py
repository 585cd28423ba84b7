"""Every implementation the storage contract runs over: one entry per backend.

A backend is opened at a ``place``, made fresh for each test by the fixture the backend
names: a directory, a database, a bucket. Opening the same place twice gives two handles on
the same records or bytes, as two processes (two nodes) would have. A backend that needs a
service gets it from that fixture (a throwaway PostgreSQL cluster, a SeaweedFS), which
skips without the service's binaries; CI turns a skip into a failure.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from freight.core.blobs import (
    BlobStore,
    PipeTarget,
    Presigner,
    ReadBack,
    SendfileSource,
    ServerConcat,
)
from freight.core.ports import SessionRepository
from freight.core.users import UserRepository
from freight.storage import LocalBlobs, MemoryBlobs, SqliteSessions
from freight.storage.local_users import SqliteUsers
from freight.storage.pg_sessions import open_pg_sessions
from freight.storage.pg_users import open_pg_users
from tests.s3.fixtures import S3Place
from tests.s3.stores import open_store

# Every ability Protocol, by name: a blob backend lists the ones it has.
STORE_ABILITIES = {
    "SendfileSource": SendfileSource,
    "ReadBack": ReadBack,
    "ServerConcat": ServerConcat,
    "Presigner": Presigner,
}
WRITER_ABILITIES = {"PipeTarget": PipeTarget}


@dataclass(frozen=True)
class SessionBackend:
    # The fixture that makes a fresh place for one test; ``open`` takes its value.
    place: str
    open: Callable[[Any], Awaitable[SessionRepository]]


@dataclass(frozen=True)
class UserBackend:
    """Users kept beside a session backend: ``open`` gives both, on one database."""

    place: str
    open: Callable[[Any], Awaitable[tuple[UserRepository, SessionRepository]]]


@dataclass(frozen=True)
class BlobBackend:
    place: str
    open: Callable[[Any], Awaitable[BlobStore]]
    # Names from STORE_ABILITIES and WRITER_ABILITIES this store has (and no others).
    abilities: frozenset[str] = frozenset()
    # Whether written bytes leave the process (a big blob then costs no memory).
    bytes_leave_memory: bool = True


async def _sqlite(place: Path) -> SessionRepository:
    place.mkdir(parents=True, exist_ok=True)
    return SqliteSessions(place / "freight.db")


async def _postgresql(dsn: str) -> SessionRepository:
    return await open_pg_sessions(dsn)


async def _sqlite_users(place: Path) -> tuple[UserRepository, SessionRepository]:
    place.mkdir(parents=True, exist_ok=True)
    return SqliteUsers(place / "freight.db"), SqliteSessions(place / "freight.db")


async def _postgresql_users(dsn: str) -> tuple[UserRepository, SessionRepository]:
    return await open_pg_users(dsn), await open_pg_sessions(dsn)


async def _local(place: Path) -> BlobStore:
    return LocalBlobs(place, 1024 * 1024)


async def _memory(place: Path) -> BlobStore:
    return MemoryBlobs()


async def _s3(place: S3Place) -> BlobStore:
    # Each handle is a node of its own: its own client and its own spool directory.
    return await open_store(place.seaweed, place.bucket, place.new_spool(), place.dsn)


SESSION_BACKENDS: dict[str, SessionBackend] = {
    "sqlite": SessionBackend(place="tmp_place", open=_sqlite),
    "postgresql": SessionBackend(place="pg_dsn", open=_postgresql),
}
USER_BACKENDS: dict[str, UserBackend] = {
    "sqlite": UserBackend(place="tmp_place", open=_sqlite_users),
    "postgresql": UserBackend(place="pg_dsn", open=_postgresql_users),
}
BLOB_BACKENDS: dict[str, BlobBackend] = {
    "local": BlobBackend(
        place="tmp_place",
        open=_local,
        abilities=frozenset({"SendfileSource", "ReadBack", "PipeTarget"}),
    ),
    "memory": BlobBackend(place="tmp_place", open=_memory, bytes_leave_memory=False),
    "s3": BlobBackend(
        place="s3_place", open=_s3, abilities=frozenset({"ServerConcat", "Presigner"})
    ),
}
