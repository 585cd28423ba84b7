"""Engines over a real LocalStore (SQLite and files in tmp_path); reopening one is a restart."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from freight.core.engine import UploadEngine
from freight.storage.local import LocalStore


@pytest.fixture
async def open_engine(tmp_path: Path) -> AsyncIterator[Callable[..., UploadEngine]]:
    """``open_engine(**options)``: a new engine on the test's data directory."""
    opened: list[UploadEngine] = []

    def open_(**options: Any) -> UploadEngine:
        options.setdefault("sync_every", 4096)
        engine = UploadEngine(LocalStore(tmp_path / "data"), **options)
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
