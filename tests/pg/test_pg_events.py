"""PgEvents across nodes: what one node publishes, watchers on another see; progress is
coalesced before it reaches PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import asyncpg
import pytest

from freight.core.events import UploadEvent, UploadEventKind
from freight.storage.pg_events import MAX_PAYLOAD, PgEvents, open_pg_events
from freight.storage.pg_link import LinkSettings

Nodes = tuple[PgEvents, PgEvents]
CREATED, PROGRESS, FINISHED = (
    UploadEventKind.CREATED,
    UploadEventKind.PROGRESS,
    UploadEventKind.FINISHED,
)


def event(kind: UploadEventKind, upload_id: str, received: int, name: str = "f") -> UploadEvent:
    return UploadEvent(kind, upload_id, name, 1000, received, received, time.time())


@pytest.fixture
async def nodes(pg_dsn: str) -> AsyncIterator[Nodes]:
    a, b = await asyncio.gather(
        open_pg_events(pg_dsn, "a", LinkSettings(application_name="events-a")),
        open_pg_events(pg_dsn, "b", LinkSettings(application_name="events-b")),
    )
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


async def _drain(queue: asyncio.Queue[UploadEvent], until: float) -> list[UploadEvent]:
    seen: list[UploadEvent] = []
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(until):
            while True:
                seen.append(await queue.get())
    return seen


async def test_a_watcher_on_one_node_sees_uploads_of_another(nodes: Nodes) -> None:
    a, b = nodes
    with b.watch() as watcher:
        watcher.snapshot(10)
        a.publish(event(CREATED, "u", 0))
        a.publish(event(PROGRESS, "u", 10))
        await watcher.wait(5)
        await asyncio.sleep(0.2)
        seen = [(e.kind, e.upload_id, e.received) for e in watcher.take()]
        assert (CREATED, "u", 0) in seen and seen[-1] == (PROGRESS, "u", 10)
        b.publish(event(CREATED, "v", 0))  # and the other way round
        a.publish(event(FINISHED, "u", 1000))
        await asyncio.sleep(0.3)
    with a.watch() as on_a:
        assert [e.upload_id for e in on_a.snapshot(10)] == ["v"]
    with b.watch() as on_b:
        assert [e.upload_id for e in on_b.snapshot(10)] == ["v"]  # u finished everywhere
    assert b.subscriber_count == 0


async def test_progress_is_coalesced_and_the_latest_arrives(nodes: Nodes) -> None:
    a, b = nodes
    with b.subscribe() as queue:
        a.publish(event(CREATED, "u", 0))
        began = time.monotonic()
        received = 0
        while time.monotonic() - began < 1.0:  # about 200 progress events in a second
            received += 5
            a.publish(event(PROGRESS, "u", received))
            await asyncio.sleep(0.005)
        seen = await _drain(queue, 0.6)
    progress = [e.received for e in seen if e.kind is PROGRESS]
    assert seen[0].kind is CREATED
    assert progress[-1] == received  # the latest is never lost
    # At most one every 0.25 s (plus the first and the last), not one per publish.
    assert 3 <= len(progress) <= 7, len(progress)
    assert a.sent == 1 + len(progress)


async def test_an_ending_supersedes_held_back_progress(nodes: Nodes) -> None:
    a, b = nodes
    with b.subscribe() as queue:
        a.publish(event(PROGRESS, "u", 1))
        a.publish(event(PROGRESS, "u", 2))  # held back
        a.publish(event(FINISHED, "u", 1000))
        seen = await _drain(queue, 0.6)
    assert [(e.kind, e.received) for e in seen] == [(PROGRESS, 1), (FINISHED, 1000)]


async def test_many_events_and_long_names_fit_payloads(nodes: Nodes) -> None:
    a, b = nodes
    with b.subscribe() as queue:
        for i in range(200):
            a.publish(event(CREATED, f"u{i}", 0, name="é" * 5000))
        seen = await _drain(queue, 1.0)
    assert [e.upload_id for e in seen] == [f"u{i}" for i in range(200)]
    assert all(e.name and 0 < len(e.name) < 5000 for e in seen)
    payloads = list(a._payloads([event(CREATED, "x", 0, name="€" * 9000)] * 40))
    assert len(payloads) > 1
    assert all(len(p.encode()) < MAX_PAYLOAD for p in payloads)
    assert sum(len(json.loads(p)["events"]) for p in payloads) == 40


async def test_a_malformed_notification_is_ignored(nodes: Nodes, pg_dsn: str) -> None:
    _, b = nodes
    admin = await asyncpg.connect(pg_dsn)
    try:
        with b.subscribe() as queue:
            for bad in ("nope", '{"from": "x", "events": [{"event": "zap"}]}', "[]"):
                await admin.execute("SELECT pg_notify('freight_events', $1)", bad)
            good = {"from": "x", "events": [event(CREATED, "w", 0).to_dict()]}
            await admin.execute("SELECT pg_notify('freight_events', $1)", json.dumps(good))
            seen = await _drain(queue, 0.5)
    finally:
        await admin.close()
    assert [e.upload_id for e in seen] == ["w"]


async def test_a_node_does_not_hear_its_own_events_twice(nodes: Nodes) -> None:
    a, b = nodes
    with a.subscribe() as on_a, b.subscribe() as on_b:
        a.publish(event(CREATED, "u", 0))
        seen_b = await _drain(on_b, 0.5)
        seen_a = await _drain(on_a, 0.1)
    assert [e.upload_id for e in seen_b] == ["u"]  # it did go out
    assert [e.upload_id for e in seen_a] == ["u"]
