"""The SessionRepository contract, run over every session backend."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from freight.core.ports import SessionField, SessionRepository
from freight.core.rangeset import RangeSet
from freight.core.session import ConcatKind, UploadSession, UploadState, new_upload_id
from freight.errors import FreightError, UploadNotFound
from tests.contract.backends import SessionBackend

HOSTILE_IDS = ["../x", "a/b", "", "x" * 200, "a\nb", "abc\n", "a b", "'; DROP TABLE uploads;--"]


def session_of(length: int | None = 100, **fields: Any) -> UploadSession:
    fields.setdefault("id", new_upload_id())
    fields.setdefault("created", 1000.0)
    fields.setdefault("expires", 2000.0)
    fields.setdefault("metadata", {})
    return UploadSession(length=length, **fields)


def every_field() -> list[UploadSession]:
    return [
        UploadSession(
            id=new_upload_id(),
            length=12345,
            metadata={"filename": "naïve ☃ 名前.txt", "empty": "", "flag": None},
            created=1234.5,
            expires=99999.25,
            received=RangeSet([(0, 10), (20, 30)]),
            state=UploadState.RECEIVING,
            hashed_offset=10,
            hash_state=bytes(range(112)),
            concat_kind=ConcatKind.PARTIAL,
            client="2001:db8::1",
            used_by=new_upload_id(),
            chunk_size=4096,
            declared_sha256="ab" * 32,
        ),
        session_of(
            None,
            created=1500.0,
            expires=None,
            state=UploadState.FINISHED,
            concat_kind=ConcatKind.FINAL,
            concat_parts=(new_upload_id(), new_upload_id()),
            sha256="cd" * 32,
            finished=1600.0,
        ),
        session_of(0, state=UploadState.ASSEMBLING, hash_state=b"", metadata={"k": None}),
    ]


async def test_every_field_round_trips(
    sessions: SessionRepository, session_backend: SessionBackend, session_place: Any
) -> None:
    originals = every_field()
    for session in originals:
        await sessions.create(session)
    for session in originals:
        assert await sessions.load(session.id) == session
    by_creation = sorted(originals, key=lambda s: (s.created, s.id))
    assert [s.id for s in await sessions.list_all()] == [s.id for s in by_creation]
    other = await session_backend.open(session_place)  # another handle: what another process sees
    try:
        for session in originals:
            assert await other.load(session.id) == session
    finally:
        await other.close()


async def test_a_second_creation_of_an_id_is_refused(sessions: SessionRepository) -> None:
    session = session_of()
    await sessions.create(session)
    clash = session_of(id=session.id, length=5)
    with pytest.raises(FreightError):
        await sessions.create(clash)
    assert (await sessions.load(session.id)).length == 100


@pytest.mark.parametrize("upload_id", [new_upload_id(), *HOSTILE_IDS])
async def test_unknown_ids_are_not_found(sessions: SessionRepository, upload_id: str) -> None:
    with pytest.raises(UploadNotFound):
        await sessions.load(upload_id)
    with pytest.raises(UploadNotFound):
        await sessions.record_received(upload_id, 0, 10, expires=None)
    with pytest.raises(UploadNotFound):
        await sessions.update(session_of(id=upload_id), ["state"])
    with pytest.raises(UploadNotFound):
        await sessions.update(session_of(id=upload_id), ["state"], expect=UploadState.RECEIVING)
    await sessions.delete(upload_id)  # not an error
    assert await sessions.list_all() == []


async def test_record_received_merges_and_returns_the_union(sessions: SessionRepository) -> None:
    session = session_of(100, client="c")
    await sessions.create(session)
    steps = [
        ((10, 20), 2001.0, [(10, 20)]),
        ((0, 10), 2002.0, [(0, 20)]),
        ((30, 40), 2003.0, [(0, 20), (30, 40)]),
        ((15, 35), None, [(0, 40)]),
        ((5, 6), 2004.0, [(0, 40)]),
    ]
    for (start, end), expires, expected in steps:
        stored = await sessions.record_received(session.id, start, end, expires=expires)
        assert list(stored) == expected
        loaded = await sessions.load(session.id)
        assert list(loaded.received) == expected and loaded.expires == expires
    # What the aggregates see moves with the ranges.
    assert (await sessions.unfinished_totals(0.0, "c")).pending_bytes == 60
    await sessions.record_received(session.id, 40, 100, expires=None)
    assert await sessions.work_ids(10) == [session.id]


async def test_concurrent_recorders_lose_nothing(sessions: SessionRepository) -> None:
    session = session_of(40 * 64, expires=None)
    await sessions.create(session)
    ranges = [(i * 40, i * 40 + 40) for i in range(64)]
    random.Random(7).shuffle(ranges)
    await asyncio.gather(
        *(sessions.record_received(session.id, s, e, expires=None) for s, e in ranges)
    )
    loaded = await sessions.load(session.id)
    assert list(loaded.received) == [(0, 40 * 64)]
    assert (await sessions.unfinished_totals(0.0)).pending_bytes == 0


async def test_two_handles_recording_at_once_lose_nothing(
    sessions: SessionRepository, session_backend: SessionBackend, session_place: Any
) -> None:
    session = session_of(10 * 100, expires=None)
    await sessions.create(session)
    other = await session_backend.open(session_place)
    try:
        # Every other range through the other handle: each one's merge must see the rest.
        calls = [
            (sessions if i % 2 else other).record_received(
                session.id, i * 10, i * 10 + 10, expires=None
            )
            for i in range(100)
        ]
        random.Random(3).shuffle(calls)
        await asyncio.gather(*calls)
        for handle in (sessions, other):
            assert list((await handle.load(session.id)).received) == [(0, 1000)]
    finally:
        await other.close()


UPDATES: dict[SessionField, Any] = {
    "length": 777,
    "expires": 4242.5,
    "state": UploadState.FINISHED,
    "hashed_offset": 20,
    "hash_state": b"\x01" * 112,
    "sha256": "ef" * 32,
    "finished": 5000.25,
    "used_by": "final-id",
}


@pytest.mark.parametrize("field", sorted(UPDATES))
async def test_update_writes_only_the_named_field(
    sessions: SessionRepository, field: SessionField
) -> None:
    session = session_of(100, metadata={"filename": "a"})
    await sessions.create(session)
    stale = await sessions.load(session.id)
    # Meanwhile another request records bytes: the stale copy must not undo that.
    await sessions.record_received(session.id, 0, 50, expires=3000.0)
    for name, value in UPDATES.items():
        setattr(stale, name, value)
    stale.metadata, stale.client, stale.received = {"x": "y"}, "other", RangeSet()
    assert await sessions.update(stale, [field]) is True

    loaded = await sessions.load(session.id)
    expected = session_of(
        100,
        id=session.id,
        metadata={"filename": "a"},
        received=RangeSet([(0, 50)]),
        expires=3000.0,
    )
    setattr(expected, field, UPDATES[field])
    assert loaded == expected


async def test_update_of_several_fields_and_none(sessions: SessionRepository) -> None:
    session = session_of(None)
    await sessions.create(session)
    session.length, session.sha256, session.expires = 10, "00" * 32, None
    assert await sessions.update(session, ["length", "sha256", "expires"]) is True
    loaded = await sessions.load(session.id)
    assert (loaded.length, loaded.sha256, loaded.expires) == (10, "00" * 32, None)
    assert await sessions.update(session, []) is True
    # No fields with ``expect``: a compare alone, true while the state is the expected one.
    assert await sessions.update(session, [], expect=UploadState.RECEIVING) is True
    assert await sessions.update(session, [], expect=UploadState.FINISHED) is False


async def test_compare_and_set(sessions: SessionRepository) -> None:
    session = session_of(100)
    await sessions.create(session)
    session.state = UploadState.ASSEMBLING
    assert await sessions.update(session, ["state"], expect=UploadState.RECEIVING) is True
    assert (await sessions.load(session.id)).state is UploadState.ASSEMBLING

    # The state moved on: a second compare and set changes nothing, not even other fields.
    session.state, session.sha256 = UploadState.FINISHED, "11" * 32
    changed = await sessions.update(session, ["state", "sha256"], expect=UploadState.RECEIVING)
    assert changed is False
    loaded = await sessions.load(session.id)
    assert (loaded.state, loaded.sha256) == (UploadState.ASSEMBLING, None)

    assert await sessions.update(session, ["state", "sha256"], expect=UploadState.ASSEMBLING)
    loaded = await sessions.load(session.id)
    assert (loaded.state, loaded.sha256) == (UploadState.FINISHED, "11" * 32)


async def test_one_of_many_compare_and_sets_wins(sessions: SessionRepository) -> None:
    session = session_of(100)
    await sessions.create(session)
    contenders = []
    for i in range(12):
        copy = session_of(100, id=session.id, state=UploadState.FINISHED, sha256=f"{i:064x}")
        contenders.append(sessions.update(copy, ["state", "sha256"], expect=UploadState.RECEIVING))
    results = await asyncio.gather(*contenders)
    assert results.count(True) == 1
    winner = results.index(True)
    assert (await sessions.load(session.id)).sha256 == f"{winner:064x}"


async def test_delete_is_idempotent(sessions: SessionRepository) -> None:
    kept, gone = session_of(), session_of()
    await sessions.create(kept)
    await sessions.create(gone)
    await sessions.delete(gone.id)
    await sessions.delete(gone.id)
    with pytest.raises(UploadNotFound):
        await sessions.load(gone.id)
    with pytest.raises(UploadNotFound):
        await sessions.update(gone, ["state"])
    assert [s.id for s in await sessions.list_all()] == [kept.id]


async def _walk(sessions: SessionRepository, kind: Any, limit: int, now: float) -> list[str]:
    seen: list[str] = []
    after = None
    while True:
        page = await sessions.list_page(kind, after, limit, now)
        assert len(page) <= limit
        seen.extend(s.id for s in page)
        if len(page) < limit:
            return seen
        after = (page[-1].created, page[-1].id)


async def test_listings_page_in_creation_order(sessions: SessionRepository) -> None:
    finished = {"state": UploadState.FINISHED, "expires": None}
    files = [session_of(10, created=float(t), **finished) for t in (5, 1, 3, 3, 3, 9, 2)]
    files.append(session_of(10, created=4.0, concat_kind=ConcatKind.FINAL, **finished))
    uploads = [session_of(10, created=float(t)) for t in (8, 2, 2, 7, 6)]
    uploads.append(session_of(None, created=3.0, expires=None))
    hidden = [
        session_of(10, created=1.0, concat_kind=ConcatKind.PARTIAL, **finished),
        session_of(10, created=1.0, expires=50.0),  # expired at now=100
        session_of(10, created=1.0, state=UploadState.ASSEMBLING),
    ]
    everything = files + uploads + hidden
    random.Random(1).shuffle(everything)
    for session in everything:
        await sessions.create(session)

    def order(group: list[UploadSession]) -> list[str]:
        return [s.id for s in sorted(group, key=lambda s: (s.created, s.id))]

    for limit in (1, 2, 3, 100):
        assert await _walk(sessions, "files", limit, 100.0) == order(files)
        assert await _walk(sessions, "uploads", limit, 100.0) == order(uploads)
    assert await sessions.list_page("uploads", None, 0, 100.0) == []
    first = (await sessions.list_page("files", None, 1, 100.0))[0]
    assert first == min(files, key=lambda s: (s.created, s.id))


async def test_unfinished_totals(sessions: SessionRepository) -> None:
    rows = [
        session_of(100, client="a", received=RangeSet([(0, 30)])),
        session_of(50, client="a", state=UploadState.ASSEMBLING),
        session_of(None, client="a"),  # a deferred length needs nothing yet
        session_of(70, client="b", received=RangeSet([(10, 20), (30, 40)])),
        session_of(1000, client="a", expires=10.0),  # expired at now=100
        session_of(1000, client="a", state=UploadState.FINISHED, expires=None),
        session_of(5, client=None, expires=None),
    ]
    for session in rows:
        await sessions.create(session)
    totals = await sessions.unfinished_totals(100.0)
    assert (totals.count, totals.pending_bytes) == (5, 70 + 50 + 50 + 5)
    totals = await sessions.unfinished_totals(100.0, "a")
    assert (totals.count, totals.pending_bytes) == (3, 70 + 50)
    totals = await sessions.unfinished_totals(100.0, "b")
    assert (totals.count, totals.pending_bytes) == (1, 50)
    totals = await sessions.unfinished_totals(100.0, "nobody")
    assert (totals.count, totals.pending_bytes) == (0, 0)
    # At an earlier moment the expired one still counts.
    assert (await sessions.unfinished_totals(5.0, "a")).count == 4


async def test_work_ids(sessions: SessionRepository) -> None:
    complete = session_of(10, created=3.0, received=RangeSet([(0, 10)]))
    empty = session_of(0, created=1.0)
    assembling = session_of(None, created=2.0, state=UploadState.ASSEMBLING)
    idle = [
        session_of(10, created=0.5, received=RangeSet([(0, 9)])),
        session_of(None, created=0.5, received=RangeSet([(0, 9)])),
        session_of(10, created=0.5, received=RangeSet([(0, 10)]), state=UploadState.FINISHED),
    ]
    for session in [*idle, complete, assembling, empty]:
        await sessions.create(session)
    assert await sessions.work_ids(10) == [empty.id, assembling.id, complete.id]
    assert await sessions.work_ids(2) == [empty.id, assembling.id]


async def test_expired_ids(sessions: SessionRepository) -> None:
    old = session_of(expires=10.0)
    fresh = session_of(expires=1000.0)
    used_part = session_of(expires=10.0, state=UploadState.FINISHED)
    forever = session_of(expires=None)
    for session in (old, fresh, used_part, forever):
        await sessions.create(session)
    # A finished record with an expiry is a used concatenation part: it expires too.
    assert sorted(await sessions.expired_ids(500.0)) == sorted([old.id, used_part.id])
    assert sorted(await sessions.expired_ids(5000.0)) == sorted([old.id, fresh.id, used_part.id])
    assert await sessions.expired_ids(1.0) == []


async def test_find_finished_by_size_and_digest(sessions: SessionRepository) -> None:
    digest, other = "ab" * 32, "cd" * 32
    finished = {"state": UploadState.FINISHED, "expires": None}
    newer = session_of(10, created=5.0, sha256=digest, **finished)
    older = session_of(10, created=2.0, sha256=digest, **finished)
    for session in (
        newer,
        older,
        session_of(11, created=1.0, sha256=digest, **finished),  # another size
        session_of(10, created=1.0, sha256=other, **finished),  # another digest
        # a part of a concatenation is not a listed file; an unfinished upload is not a file
        session_of(10, created=1.0, sha256=digest, concat_kind=ConcatKind.PARTIAL, **finished),
        session_of(10, created=1.0, sha256=digest),
    ):
        await sessions.create(session)
    found = await sessions.find_finished(10, digest)
    assert found is not None and found.id == older.id
    assert await sessions.find_finished(10, digest, owner=None) == found
    assert await sessions.find_finished(12, digest) is None
    assert await sessions.find_finished(10, "ef" * 32) is None
    any_digest = await sessions.find_finished(11, None)
    assert any_digest is not None and any_digest.length == 11


async def test_find_finished_sees_only_the_owner_s_files(sessions: SessionRepository) -> None:
    digest = "ab" * 32
    finished = {"state": UploadState.FINISHED, "expires": None, "sha256": digest}
    alices = session_of(10, created=2.0, owner="alice", **finished)
    await sessions.create(session_of(10, created=1.0, owner="bob", **finished))
    await sessions.create(alices)
    found = await sessions.find_finished(10, digest, owner="alice")
    assert found is not None and found.id == alices.id
    assert await sessions.find_finished(10, digest, owner="carol") is None
    anyone = await sessions.find_finished(10, digest)
    assert anyone is not None and anyone.owner == "bob"
