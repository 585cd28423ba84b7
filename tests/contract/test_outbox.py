"""The hook outbox contract (HookOutbox, and the outbox entries SessionRepository.update and
delete carry), run over every session backend."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from freight.core.ports import HookOutbox, OutboxEntry, SessionRepository
from freight.core.session import UploadState
from freight.errors import UploadNotFound
from tests.contract.backends import SessionBackend
from tests.contract.test_sessions import session_of


def entry(key: str, upload_id: str = "u", *, created: float = 100.0) -> OutboxEntry:
    return OutboxEntry(
        key=key,
        event="post-finish",
        upload_id=upload_id,
        payload='{"k": 1}',
        created=created,
        due=created,
    )


def outbox_of(sessions: SessionRepository) -> HookOutbox:
    return cast(HookOutbox, sessions)


async def test_a_changed_update_adds_its_entries(sessions: SessionRepository) -> None:
    session = session_of()
    await sessions.create(session)
    session.state = UploadState.FINISHED
    first = entry(f"post-finish:{session.id}", session.id)
    assert await sessions.update(session, ["state"], expect=UploadState.RECEIVING, outbox=[first])
    # The compare-and-set fails the second time: nothing is added.
    lost = entry("another", session.id)
    assert not await sessions.update(
        session, ["state"], expect=UploadState.RECEIVING, outbox=[lost]
    )
    outbox = outbox_of(sessions)
    assert await outbox.outbox_depth() == 1
    taken = await outbox.take_due(200.0, 10, lease=30.0)
    assert taken == [first]


async def test_a_delete_adds_its_entries_only_if_the_record_was_there(
    sessions: SessionRepository,
) -> None:
    session = session_of()
    await sessions.create(session)
    await sessions.delete(session.id, outbox=[entry("terminated", session.id)])
    await sessions.delete(session.id, outbox=[entry("again", session.id)])
    taken = await outbox_of(sessions).take_due(200.0, 10, lease=30.0)
    assert [e.key for e in taken] == ["terminated"]
    assert taken[0].payload == '{"k": 1}' and taken[0].event == "post-finish"


async def test_an_update_that_fails_adds_nothing(sessions: SessionRepository) -> None:
    session = session_of()
    with pytest.raises(UploadNotFound):
        await sessions.update(session, ["state"], outbox=[entry("x", session.id)])
    assert await outbox_of(sessions).outbox_depth() == 0


async def test_leases_retries_and_delivery(sessions: SessionRepository) -> None:
    outbox = outbox_of(sessions)
    for n, created in enumerate((10.0, 20.0, 30.0)):
        session = session_of()
        await sessions.create(session)
        await sessions.delete(session.id, outbox=[entry(f"k{n}", session.id, created=created)])
    assert [e.key for e in await outbox.take_due(15.0, 10, lease=5.0)] == ["k0"]
    # k0 is leased until 20: another worker gets only the others.
    assert [e.key for e in await outbox.take_due(19.0, 10, lease=5.0)] == []
    assert [e.key for e in await outbox.take_due(35.0, 1, lease=5.0)] == ["k0"]  # ran out
    assert [e.key for e in await outbox.take_due(35.0, 10, lease=5.0)] == ["k1", "k2"]
    await outbox.retry_later("k1", 100.0, "connection refused")
    await outbox.delivered("k2")
    assert await outbox.outbox_depth() == 2
    assert [e.key for e in await outbox.take_due(99.0, 10, lease=5.0)] == ["k0"]
    again = await outbox.take_due(100.0, 10, lease=5.0)
    assert [(e.key, e.attempts, e.due) for e in again] == [("k1", 1, 100.0)]


async def test_two_handles_never_take_the_same_entry(
    session_backend: SessionBackend, session_place: Any
) -> None:
    first = await session_backend.open(session_place)
    second = await session_backend.open(session_place)
    try:
        for n in range(40):
            session = session_of()
            await first.create(session)
            await first.delete(session.id, outbox=[entry(f"k{n:02}", session.id)])
        takers = [outbox_of(first), outbox_of(second)] * 4
        batches = await asyncio.gather(*(t.take_due(200.0, 7, lease=60.0) for t in takers))
        keys = [e.key for batch in batches for e in batch]
        assert len(keys) == len(set(keys)) == 40
    finally:
        await first.close()
        await second.close()
