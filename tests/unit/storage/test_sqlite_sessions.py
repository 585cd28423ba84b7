"""SqliteSessions beyond the contract: durability, a full disk, other processes, old files."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from freight.core.session import UploadSession, UploadState, new_upload_id
from freight.errors import InsufficientStorage
from freight.storage import SqliteSessions
from tests.unit.storage.test_local_db_migration import OLD_ROWS, SHA, _old_database


def session_of(length: int | None = 100) -> UploadSession:
    return UploadSession(id=new_upload_id(), length=length, metadata={}, created=1.0, expires=None)


@pytest.mark.parametrize(("durable", "level"), [(True, 2), (False, 1)])
async def test_durable_commits_are_synchronous_full(
    tmp_path: Path, durable: bool, level: int
) -> None:
    sessions = SqliteSessions(tmp_path / "freight.db", durable=durable)
    try:
        assert sessions.table._db.execute("PRAGMA synchronous").fetchone() == (level,)
        assert sessions.table._db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        await sessions.close()


@pytest.mark.parametrize("frees", [True, False])
async def test_a_full_disk_asks_for_room_once(tmp_path: Path, frees: bool) -> None:
    asked: list[int] = []

    def on_full() -> bool:
        asked.append(1)
        if frees:  # what spending the space reserve does for the database
            sessions.table._db.execute("PRAGMA max_page_count = 100000")
        return frees

    sessions = SqliteSessions(tmp_path / "freight.db", on_full=on_full)
    try:
        session = session_of(10**9)
        await sessions.create(session)
        # SQLite's page limit stands in for a full disk: both fail with SQLITE_FULL.
        pages = sessions.table._db.execute("PRAGMA page_count").fetchone()[0]
        sessions.table._db.execute(f"PRAGMA max_page_count = {pages}")
        recorded = 0
        with contextlib.nullcontext() if frees else pytest.raises(InsufficientStorage):
            while not asked and recorded < 5000:
                await sessions.record_received(
                    session.id, recorded * 10, recorded * 10 + 5, expires=None
                )
                recorded += 1
        assert asked == [1]
        loaded = await sessions.load(session.id)
        # Every merge that returned is stored; a refused one left nothing half-written.
        assert len(loaded.received) == recorded
        session.state = UploadState.FINISHED
        if frees:
            assert await sessions.update(session, ["state"]) is True
    finally:
        await sessions.close()


RECORDER = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from freight.storage import SqliteSessions

    async def main() -> None:
        sessions = SqliteSessions(Path(sys.argv[1]), durable=False)
        print("ready", flush=True)
        for i in range(1, int(sys.argv[3]), 2):
            await sessions.record_received(sys.argv[2], i * 10, i * 10 + 10, expires=None)
        await sessions.close()

    asyncio.run(main())
    """
)


async def test_two_processes_recording_at_once_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "freight.db"
    sessions = SqliteSessions(path, durable=False)
    count = 1000
    try:
        session = session_of(count * 10)
        await sessions.create(session)
        other = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            RECORDER,
            str(path),
            session.id,
            str(count),
            stdout=asyncio.subprocess.PIPE,
        )
        assert other.stdout is not None
        assert await asyncio.wait_for(other.stdout.readline(), 60) == b"ready\n"
        for i in range(0, count, 2):
            await sessions.record_received(session.id, i * 10, i * 10 + 10, expires=None)
        assert await asyncio.wait_for(other.wait(), 60) == 0
        assert list((await sessions.load(session.id)).received) == [(0, count * 10)]
        assert await sessions.work_ids(10) == [session.id]
    finally:
        await sessions.close()


async def test_an_old_database_opens_with_protocol_state_moved(tmp_path: Path) -> None:
    path = tmp_path / "freight.db"
    _old_database(path)
    sessions = SqliteSessions(path)
    try:
        chunks = await sessions.load("chunks")
        assert (chunks.metadata, chunks.chunk_size, chunks.declared_sha256) == (
            {"filename": "a.bin"},
            4096,
            SHA.lower(),
        )
        plain = await sessions.load("tus-plain")
        assert plain.metadata == OLD_ROWS["tus-plain"] and plain.chunk_size is None
        stored = await sessions.record_received("tcp", 0, 8192, expires=None)
        assert list(stored) == [(0, 8192)]
        assert "tcp" in await sessions.work_ids(10)
    finally:
        await sessions.close()


async def test_the_digest_lookup_reads_its_index_not_every_file(tmp_path: Path) -> None:
    """find_finished is asked before each file a client sends: it must not scan."""
    sessions = SqliteSessions(tmp_path / "freight.db")
    try:
        plans: list[str] = []
        original = sessions.table._query

        def traced(sql: str, parameters: Any = ()) -> list[Any]:
            plan = sessions.table._db.execute(f"EXPLAIN QUERY PLAN {sql}", parameters).fetchall()
            plans.append(" ".join(str(row[-1]) for row in plan))
            return original(sql, parameters)

        sessions.table._query = traced  # type: ignore[method-assign]
        await sessions.find_finished(10, "ab" * 32)
        await sessions.find_finished(10, None)
        assert len(plans) == 2
        assert all("USING INDEX uploads_digest" in plan for plan in plans), plans
    finally:
        await sessions.close()
