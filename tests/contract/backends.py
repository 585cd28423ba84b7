"""Every implementation the storage contract runs over: one entry per backend.

A backend is opened at a ``place``: a fresh directory per test. Opening the same place
twice gives two handles on the same records or bytes, as two processes (two nodes) would
have. A backend that needs a service (a database server, a bucket) finds its address in
the environment and says why it cannot run through ``unavailable``; its tests are skipped.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from freight.core.blobs import BlobStore, PipeTarget, ReadBack, SendfileSource, ServerConcat
from freight.core.ports import SessionRepository
from freight.storage import LocalBlobs, MemoryBlobs, SqliteSessions

# Every ability Protocol, by name: a blob backend lists the ones it has.
STORE_ABILITIES = {
    "SendfileSource": SendfileSource,
    "ReadBack": ReadBack,
    "ServerConcat": ServerConcat,
}
# ``Presigner`` is added here by the first store that has it (core.blobs.Presigner).
WRITER_ABILITIES = {"PipeTarget": PipeTarget}


def _available() -> str | None:
    return None


@dataclass(frozen=True)
class SessionBackend:
    open: Callable[[Path], Awaitable[SessionRepository]]
    unavailable: Callable[[], str | None] = _available


@dataclass(frozen=True)
class BlobBackend:
    open: Callable[[Path], Awaitable[BlobStore]]
    # Names from STORE_ABILITIES and WRITER_ABILITIES this store has (and no others).
    abilities: frozenset[str] = frozenset()
    # Whether written bytes leave the process (a big blob then costs no memory).
    bytes_leave_memory: bool = True
    unavailable: Callable[[], str | None] = _available


async def _sqlite(place: Path) -> SessionRepository:
    place.mkdir(parents=True, exist_ok=True)
    return SqliteSessions(place / "freight.db")


async def _local(place: Path) -> BlobStore:
    return LocalBlobs(place, 1024 * 1024)


async def _memory(place: Path) -> BlobStore:
    return MemoryBlobs()


SESSION_BACKENDS: dict[str, SessionBackend] = {
    "sqlite": SessionBackend(open=_sqlite),
}
BLOB_BACKENDS: dict[str, BlobBackend] = {
    "local": BlobBackend(
        open=_local, abilities=frozenset({"SendfileSource", "ReadBack", "PipeTarget"})
    ),
    "memory": BlobBackend(open=_memory, bytes_leave_memory=False),
}
