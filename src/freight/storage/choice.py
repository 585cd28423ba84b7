"""Which backend a server runs on, from its ``--store`` setting.

``local`` (the default) keeps records in SQLite and bytes as files in the data directory.
``memory`` keeps bytes in memory and records in a SQLite file started afresh each time:
nothing survives a restart. It is for trying freight out and for tests that prove the
paths a store without sendfile, splice or cheap read-back takes.
"""

from __future__ import annotations

from pathlib import Path

from freight.core.ports import Backend
from freight.storage.local import open_local
from freight.storage.local_sessions import SqliteSessions
from freight.storage.memory import MemoryBlobs

__all__ = ["STORES", "open_backend"]

STORES = ("local", "memory")

_MEMORY_DB = "memory-store.db"


def open_backend(store: str, data_dir: Path, *, durable: bool) -> Backend:
    """The backend ``store`` names (one of :data:`STORES`), rooted in ``data_dir``."""
    if store == "local":
        return open_local(data_dir, durable=durable)
    if store == "memory":
        data_dir.mkdir(parents=True, exist_ok=True)
        for stale in data_dir.glob(f"{_MEMORY_DB}*"):
            stale.unlink()  # the bytes its records described are gone
        return Backend(sessions=SqliteSessions(data_dir / _MEMORY_DB), blobs=MemoryBlobs())
    raise ValueError(f"unknown store {store!r}; known: {', '.join(STORES)}")
