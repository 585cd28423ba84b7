"""Engines over real backends in tmp_path; reopening one is a restart.

Every engine test runs twice: over the local backend (SQLite + files: sendfile, splice and
hashing read back from the page cache) and over SQLite + an in-memory blob store that has
none of those abilities, which proves the engine's fallbacks (inline hashing, buffered
copies). The in-memory store outlives the engine, as an object store outlives a server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from freight.core.engine import UploadEngine
from freight.core.ports import Backend
from freight.storage.local import open_local
from freight.storage.local_sessions import SqliteSessions
from freight.storage.memory import MemoryBlobs

# The in-memory store's room: admission tests need a limit to hit.
MEMORY_CAPACITY = 4 * 1024**3


class OutlivingMemoryBlobs(MemoryBlobs):
    """An in-memory blob store that keeps its blobs when an engine closes it."""

    async def close(self) -> None:
        return None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Over both blob stores, or only the local one for tests marked ``local_blobs`` (they
    look at files on disk)."""
    if "blob_kind" in metafunc.fixturenames:
        local_only = metafunc.definition.get_closest_marker("local_blobs") is not None
        metafunc.parametrize("blob_kind", ["local"] if local_only else ["local", "memory"])


@pytest.fixture
async def open_engine(tmp_path: Path, blob_kind: str) -> AsyncIterator[Callable[..., UploadEngine]]:
    """``open_engine(**options)``: a new engine on the test's data directory."""
    opened: list[UploadEngine] = []
    memory = OutlivingMemoryBlobs(capacity=MEMORY_CAPACITY)

    def open_(**options: Any) -> UploadEngine:
        options.setdefault("sync_every", 4096)
        data = tmp_path / "data"
        if blob_kind == "local":
            backend = open_local(data)
        else:
            data.mkdir(exist_ok=True)
            backend = Backend(sessions=SqliteSessions(data / "freight.db"), blobs=memory)
        engine = UploadEngine(backend, **options)
        opened.append(engine)
        return engine

    yield open_
    for engine in opened:
        await engine.close()  # closing twice is harmless


@pytest.fixture
def restart(
    open_engine: Callable[..., UploadEngine],
) -> Callable[..., Awaitable[UploadEngine]]:
    """``await restart(engine, **options)``: close it and open a new one on the same data."""

    async def restart_(engine: UploadEngine, **options: Any) -> UploadEngine:
        await engine.close()
        return open_engine(**options)

    return restart_


@pytest.fixture
def engine(open_engine: Callable[..., UploadEngine]) -> UploadEngine:
    return open_engine()
