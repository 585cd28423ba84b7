"""PgSessions against a real PostgreSQL: what every SessionRepository must do, and ranges
recorded by two nodes at once."""

from __future__ import annotations

import asyncio
import dataclasses
import random

import pytest

from freight.core.rangeset import RangeSet
from freight.core.session import ConcatKind, UploadSession, UploadState
from freight.errors import FreightError, UploadNotFound
from freight.storage.pg_sessions import PgSessions, open_pg_sessions

NOW = 1_700_000_000.123456789


def session(upload_id: str, **fields: object) -> UploadSession:
    values: dict[str, object] = {
        "id": upload_id,
        "length": 100,
        "metadata": {"filename": "a.bin"},
        "created": NOW,
        "expires": NOW + 3600,
    }
    values.update(fields)
    return UploadSession(**values)  # type: ignore[arg-type]


async def test_every_field_comes_back_as_it_went_in(pg_sessions: PgSessions) -> None:
    full = UploadSession(
        id="full",
        length=(1 << 50) + 3,
        # U+0000 (which jsonb refuses), other scripts, an empty value, key order kept
        metadata={"z": "x\x00y", "filename": "ünïcode ✓ 名前.bin", "empty": None, "a": ""},
        created=NOW,
        expires=NOW + 0.000001,
        received=RangeSet([(0, 10), (20, 30), (1 << 40, (1 << 40) + 1)]),
        state=UploadState.ASSEMBLING,
        hashed_offset=10,
        hash_state=bytes(range(256)),
        concat_kind=ConcatKind.FINAL,
        concat_parts=("p1", "p2", "p3"),
        sha256="ab" * 32,
        finished=NOW + 1.5,
        client="2001:db8::1",
        used_by="other",
        chunk_size=8 << 20,
        declared_sha256="cd" * 32,
    )
    bare = UploadSession(id="bare", length=None, metadata={}, created=NOW, expires=None)
    for original in (full, bare):
        await pg_sessions.create(original)
        loaded = await pg_sessions.load(original.id)
        assert loaded == original
        assert list(loaded.metadata) == list(original.metadata)


async def test_unknown_ids(pg_sessions: PgSessions) -> None:
    with pytest.raises(UploadNotFound):
        await pg_sessions.load("nope")
    with pytest.raises(UploadNotFound):
        await pg_sessions.record_received("nope", 0, 10, expires=None)
    with pytest.raises(UploadNotFound):
        await pg_sessions.update(session("nope"), ["length"])
    with pytest.raises(UploadNotFound):
        await pg_sessions.update(session("nope"), ["state"], expect=UploadState.RECEIVING)
    await pg_sessions.delete("nope")


async def test_a_clashing_id_is_a_freight_error(pg_sessions: PgSessions) -> None:
    await pg_sessions.create(session("one"))
    with pytest.raises(FreightError, match="already exists") as caught:
        await pg_sessions.create(session("one", length=5))
    assert type(caught.value) is FreightError
    assert (await pg_sessions.load("one")).length == 100


@pytest.mark.parametrize("seed", range(4))
async def test_recorded_ranges_merge_as_rangeset_does(pg_sessions: PgSessions, seed: int) -> None:
    rng = random.Random(seed)
    await pg_sessions.create(session("u", length=1000))
    model = RangeSet()
    for step in range(40):
        start = rng.randrange(0, 1000)
        end = min(1000, start + rng.choice([0, 1, 5, 30, 200]))
        model.add(start, end)
        stored = await pg_sessions.record_received("u", start, end, expires=NOW + step)
        assert stored == model, (start, end)
    loaded = await pg_sessions.load("u")
    assert loaded.received == model
    assert loaded.expires == NOW + 39
    totals = await pg_sessions.unfinished_totals(NOW)
    assert totals.pending_bytes == 1000 - model.total()


async def test_recording_returns_ranges_others_added(pg_sessions: PgSessions) -> None:
    await pg_sessions.create(session("u", received=RangeSet([(50, 60)])))
    assert await pg_sessions.record_received("u", 0, 10, expires=None) == RangeSet(
        [(0, 10), (50, 60)]
    )
    assert await pg_sessions.record_received("u", 10, 50, expires=None) == RangeSet([(0, 60)])
    assert (await pg_sessions.load("u")).expires is None
    with pytest.raises(ValueError):
        await pg_sessions.record_received("u", 5, 4, expires=None)


async def test_two_nodes_recording_interleaved_ranges_lose_nothing(pg_dsn: str) -> None:
    pieces, size = 300, 1000
    nodes = [await open_pg_sessions(pg_dsn) for _ in range(2)]
    try:
        await nodes[0].create(session("u", length=pieces * size))
        order = list(range(pieces))
        random.Random(7).shuffle(order)

        async def record(piece: int) -> None:
            node = nodes[piece % 2]  # neighbouring pieces come from different nodes
            await node.record_received("u", piece * size, (piece + 1) * size, expires=NOW)

        await asyncio.gather(*(record(piece) for piece in order))
        loaded = await nodes[1].load("u")
        assert loaded.received == RangeSet([(0, pieces * size)])
        assert await nodes[0].work_ids(10) == ["u"]  # received_bytes kept up as well
    finally:
        for node in nodes:
            await node.close()


async def test_update_writes_only_the_named_fields(pg_sessions: PgSessions) -> None:
    stored = session("u", received=RangeSet([(0, 10)]))
    await pg_sessions.create(stored)
    await pg_sessions.record_received("u", 10, 20, expires=NOW + 5)
    stale = dataclasses.replace(
        stored, length=7, sha256="ee" * 32, hashed_offset=3, hash_state=b"h", used_by="x"
    )
    assert await pg_sessions.update(stale, ["hashed_offset", "hash_state"]) is True
    loaded = await pg_sessions.load("u")
    assert (loaded.hashed_offset, loaded.hash_state) == (3, b"h")
    assert (loaded.length, loaded.sha256, loaded.used_by) == (100, None, None)
    assert loaded.received == RangeSet([(0, 20)])  # never written back from a stale copy
    assert loaded.expires == NOW + 5
    assert await pg_sessions.update(stale, []) is True


async def test_update_compare_and_set(pg_sessions: PgSessions) -> None:
    await pg_sessions.create(session("u"))
    finished = dataclasses.replace(
        await pg_sessions.load("u"), state=UploadState.FINISHED, finished=NOW, sha256="aa" * 32
    )
    fields = ["state", "finished", "sha256"]
    assert await pg_sessions.update(finished, fields, expect=UploadState.ASSEMBLING) is False
    assert (await pg_sessions.load("u")).state is UploadState.RECEIVING
    assert await pg_sessions.update(finished, fields, expect=UploadState.RECEIVING) is True
    assert await pg_sessions.update(finished, fields, expect=UploadState.RECEIVING) is False
    loaded = await pg_sessions.load("u")
    assert (loaded.state, loaded.finished, loaded.sha256) == (
        UploadState.FINISHED,
        NOW,
        "aa" * 32,
    )
    with pytest.raises(ValueError):
        await pg_sessions.update(finished, ["received"])  # type: ignore[list-item]


async def test_only_one_of_many_racing_compare_and_sets_wins(pg_sessions: PgSessions) -> None:
    await pg_sessions.create(session("u"))
    finished = dataclasses.replace(session("u"), state=UploadState.FINISHED)
    results = await asyncio.gather(
        *(pg_sessions.update(finished, ["state"], expect=UploadState.RECEIVING) for _ in range(20))
    )
    assert sorted(results) == [False] * 19 + [True]


async def test_delete_is_idempotent(pg_sessions: PgSessions) -> None:
    await pg_sessions.create(session("u"))
    await pg_sessions.delete("u")
    await pg_sessions.delete("u")
    with pytest.raises(UploadNotFound):
        await pg_sessions.load("u")
    assert await pg_sessions.list_all() == []


async def _listing_fixture(sessions: PgSessions) -> None:
    finished = {"state": UploadState.FINISHED, "expires": None, "finished": NOW}
    rows = [
        session("f1", created=NOW + 1, **finished),
        session("f3", created=NOW + 2, **finished),
        session("f2", created=NOW + 2, **finished),  # same instant: ordered by id
        session("part", created=NOW + 3, concat_kind=ConcatKind.PARTIAL, **finished),
        session("whole", created=NOW + 4, concat_kind=ConcatKind.FINAL, **finished),
        session("r1", created=NOW + 1),
        session("r2", created=NOW + 2, expires=None),
        session("r-expired", created=NOW + 3, expires=NOW - 1),
        session("r3", created=NOW + 4, expires=NOW),  # expires exactly now: still listed
        session("assembling", created=NOW + 5, state=UploadState.ASSEMBLING),
    ]
    random.Random(3).shuffle(rows)
    for row in rows:
        await sessions.create(row)


async def test_list_page_pages_both_kinds(pg_sessions: PgSessions) -> None:
    await _listing_fixture(pg_sessions)
    for kind, expected in (
        ("files", ["f1", "f2", "f3", "whole"]),
        ("uploads", ["r1", "r2", "r3"]),
    ):
        seen: list[str] = []
        after = None
        while True:
            page = await pg_sessions.list_page(kind, after, 2, NOW)  # type: ignore[arg-type]
            assert len(page) <= 2
            if not page:
                break
            seen.extend(item.id for item in page)
            after = (page[-1].created, page[-1].id)
        assert seen == expected, kind
    assert [s.id for s in await pg_sessions.list_all()][:2] == ["f1", "r1"]


async def test_unfinished_totals(pg_sessions: PgSessions) -> None:
    rows = [
        session("a", client="1.1.1.1", received=RangeSet([(0, 40)])),  # needs 60
        session("b", client="1.1.1.1", length=None),  # unknown length: needs 0
        session("c", client="2.2.2.2", state=UploadState.ASSEMBLING, length=10),
        session("d", client="2.2.2.2", expires=NOW - 1),  # expired
        session("e", client="1.1.1.1", state=UploadState.FINISHED, expires=None),
        session("f", client=None, length=5, expires=None),
    ]
    for row in rows:
        await pg_sessions.create(row)
    totals = await pg_sessions.unfinished_totals(NOW)
    assert (totals.count, totals.pending_bytes) == (4, 60 + 0 + 10 + 5)
    mine = await pg_sessions.unfinished_totals(NOW, "1.1.1.1")
    assert (mine.count, mine.pending_bytes) == (2, 60)
    nobody = await pg_sessions.unfinished_totals(NOW, "9.9.9.9")
    assert (nobody.count, nobody.pending_bytes) == (0, 0)


async def test_work_ids_and_expired_ids(pg_sessions: PgSessions) -> None:
    rows = [
        session("complete", created=NOW + 2, length=10, received=RangeSet([(0, 10)])),
        session("empty", created=NOW + 1, length=0),
        session("partly", created=NOW, length=10, received=RangeSet([(0, 9)])),
        session("assembling", created=NOW + 3, state=UploadState.ASSEMBLING),
        session("unknown-length", created=NOW, length=None),
        session("done", created=NOW, state=UploadState.FINISHED, expires=None),
        session("old", created=NOW, expires=NOW - 10),
    ]
    for row in rows:
        await pg_sessions.create(row)
    assert await pg_sessions.work_ids(10) == ["empty", "complete", "assembling"]
    assert await pg_sessions.work_ids(2) == ["empty", "complete"]
    await pg_sessions.record_received("partly", 9, 10, expires=NOW)
    assert await pg_sessions.work_ids(1) == ["partly"]
    assert await pg_sessions.expired_ids(NOW) == ["old"]
    assert sorted(await pg_sessions.expired_ids(NOW + 3600.5)) == [
        "assembling",
        "complete",
        "empty",
        "old",
        "partly",
        "unknown-length",
    ]
