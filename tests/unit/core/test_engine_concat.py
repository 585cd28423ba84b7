"""Concatenation: a partial upload belongs to one final at most, durably; finals obey limits."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from freight.core.engine import UploadEngine
from freight.core.session import ConcatKind, UploadSession, UploadState
from freight.errors import ConcatenationError, UploadNotFound, UploadTooLarge
from freight.storage.local import open_local
from tests.unit.core.stored import local, stored_bytes

MiB = 1024 * 1024
OpenEngine = Callable[..., UploadEngine]
Restart = Callable[..., Awaitable[UploadEngine]]


async def partial(engine: UploadEngine, data: bytes | None, length: int | None = None) -> str:
    """A partial upload; finished with ``data`` unless that is None."""
    size = len(data) if data is not None else length
    session = await engine.create(length=size, metadata={}, concat_kind=ConcatKind.PARTIAL)
    if data is not None:
        await send(engine, session.id, data)
    return session.id


async def send(engine: UploadEngine, upload_id: str, data: bytes) -> UploadSession:
    async with engine.writer(upload_id, 0) as writer:
        await writer.write(data)
        session = await writer.commit()
    return await engine.finish(upload_id) if session.is_complete else session


def disk_bytes(engine: UploadEngine) -> int:
    root = local(engine).root
    return sum(
        p.stat().st_size for folder in ("files", "uploads") for p in (root / folder).iterdir()
    )


@pytest.mark.local_blobs
async def test_a_part_belongs_to_one_final(engine: UploadEngine) -> None:
    datas = [os.urandom(MiB) for _ in range(4)]
    parts = [await partial(engine, data) for data in datas]
    final = await engine.create_final(parts, {"filename": "all"})
    assert final.sha256 == hashlib.sha256(b"".join(datas)).hexdigest()
    stored = disk_bytes(engine)

    # A retry of the same creation (its answer was lost) gets the same final, copied once.
    again = await engine.create_final(parts, {"filename": "all"})
    assert again.id == final.id
    # Any other final over those parts is refused: each would copy them all again.
    for other in (parts[::-1], parts[:2], [*parts[1:], await partial(engine, b"x")]):
        with pytest.raises(ConcatenationError, match="belongs to another final"):
            await engine.create_final(other, {})
    assert disk_bytes(engine) == stored + 1  # only the one-byte part was added
    assert [s.id for s in await engine.list_sessions() if s.concat_kind is ConcatKind.FINAL] == [
        final.id
    ]


async def test_finals_created_at_once_share_no_part(engine: UploadEngine) -> None:
    parts = [await partial(engine, os.urandom(256 * 1024)) for _ in range(3)]
    orders = [parts, parts[::-1], parts[1:], parts[:2], [parts[2], parts[0], parts[1]]]
    outcomes = await asyncio.gather(
        *(engine.create_final(order, {}) for order in orders), return_exceptions=True
    )
    made = [o for o in outcomes if isinstance(o, UploadSession)]
    assert len(made) == 1, outcomes
    assert all(isinstance(o, ConcatenationError) for o in outcomes if o not in made)


async def test_ownership_survives_a_restart(engine: UploadEngine, restart: Restart) -> None:
    parts = [await partial(engine, None, length=1000) for _ in range(2)]
    final = await engine.create_final(parts, {})
    assert final.state is UploadState.ASSEMBLING
    engine = await restart(engine)
    with pytest.raises(ConcatenationError):
        await engine.create_final(parts[::-1], {})
    assert (await engine.create_final(parts, {})).id == final.id


async def test_a_deleted_final_frees_its_parts(engine: UploadEngine) -> None:
    parts = [await partial(engine, None, length=10) for _ in range(2)]
    first = await engine.create_final(parts, {})
    await engine.delete(first.id)
    second = await engine.create_final(parts[::-1], {})
    for part_id, data in zip(parts[::-1], (b"b" * 10, b"a" * 10), strict=True):
        await send(engine, part_id, data)
    for _ in range(200):
        done = await engine.get(second.id)
        if done.is_finished:
            break
        await asyncio.sleep(0.01)
    assert await stored_bytes(engine, second.id) == b"b" * 10 + b"a" * 10


@pytest.mark.local_blobs
async def test_a_final_is_held_to_the_size_limit(open_engine: OpenEngine) -> None:
    engine = open_engine(max_size=3 * MiB)
    known = [await partial(engine, None, length=2 * MiB) for _ in range(2)]
    with pytest.raises(UploadTooLarge):
        await engine.create_final(known, {})

    # Deferred lengths: the total is known only when the parts are; then it is refused.
    deferred = [await partial(engine, None) for _ in range(2)]
    final = await engine.create_final(deferred, {})
    assert final.length is None
    for part_id in deferred:
        await engine.declare_length(part_id, 2 * MiB)
        await send(engine, part_id, os.urandom(2 * MiB))
    for _ in range(200):
        try:
            await engine.get(final.id)
        except UploadNotFound:
            break
        await asyncio.sleep(0.01)
    else:
        pytest.fail("a final larger than --max-size was assembled")
    assert not local(engine).file_path(final.id).exists()


@pytest.mark.local_blobs
async def test_an_older_database_gains_the_owner_column(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    old = sqlite3.connect(data / "freight.db")
    old.executescript(
        """
        CREATE TABLE uploads (
            id TEXT PRIMARY KEY, length INTEGER, metadata TEXT NOT NULL,
            received TEXT NOT NULL, state TEXT NOT NULL, hashed_offset INTEGER NOT NULL,
            hash_state BLOB, created REAL NOT NULL, expires REAL, concat_kind TEXT,
            concat_parts TEXT NOT NULL, sha256 TEXT, finished REAL
        );
        INSERT INTO uploads VALUES
            ('oldpart', 3, '{}', '[]', 'receiving', 0, NULL, 1.0, NULL, 'partial', '[]',
             NULL, NULL);
        """
    )
    old.close()
    (data / "uploads").mkdir()
    (data / "uploads" / "oldpart.part").write_bytes(b"")
    backend = open_local(data)
    try:
        session = await backend.sessions.load("oldpart")
        assert session.used_by is None and session.concat_kind is ConcatKind.PARTIAL
        session.used_by = "somefinal"
        assert await backend.sessions.update(session, ["used_by"])
        assert (await backend.sessions.load("oldpart")).used_by == "somefinal"
    finally:
        await backend.close()
