"""The engine's hook calls (core/hooks.py): when it asks, what it tells, and which outbox
entries it writes with which change, over real SQLite and both blob stores."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, cast

import pytest

from freight.core.engine import UploadEngine
from freight.core.hooks import HookEvent, HookVerdict, idempotency_key
from freight.core.ports import HookOutbox, OutboxEntry
from freight.core.session import UploadSession
from freight.errors import HookRejected, HookUnavailable, UploadNotFound
from tests.unit.core.test_engine import write


class RecordingHooks:
    """Asks, tells and outbox entries as the engine makes them; refuses what it is told."""

    def __init__(self) -> None:
        self.asked: list[tuple[HookEvent, UploadSession]] = []
        self.told: list[tuple[HookEvent, str]] = []
        self.refuse: dict[HookEvent, Exception] = {}
        self.add_metadata: dict[str, str] = {}
        self.woken = 0

    def wants(self, event: HookEvent) -> bool:
        return True

    async def ask(self, event: HookEvent, session: UploadSession) -> HookVerdict:
        self.asked.append((event, session))
        if event in self.refuse:
            raise self.refuse[event]
        return HookVerdict(metadata=self.add_metadata)

    def tell(self, event: HookEvent, session: UploadSession) -> None:
        self.told.append((event, session.id))

    def outbox(
        self, event: HookEvent, session: UploadSession, now: float, reason: str | None = None
    ) -> tuple[OutboxEntry, ...]:
        body = {"event": event.value, "id": session.id, "sha256": session.sha256}
        if reason:
            body["reason"] = reason
        key = idempotency_key(event, session.id)
        return (OutboxEntry(key, event.value, session.id, json.dumps(body), now, due=now),)

    def outbox_written(self) -> None:
        self.woken += 1


async def pending(engine: UploadEngine) -> list[dict[str, Any]]:
    outbox = cast(HookOutbox, engine.sessions)
    entries = await outbox.take_due(engine.clock() + 1, 100, lease=0.0)
    return [json.loads(entry.payload) for entry in entries]


@pytest.fixture
def hooks() -> RecordingHooks:
    return RecordingHooks()


@pytest.fixture
def engine(open_engine: Callable[..., UploadEngine], hooks: RecordingHooks) -> UploadEngine:
    return open_engine(hooks=hooks, hook_progress_interval=0.0)


async def test_pre_create_refuses_and_nothing_is_stored(
    engine: UploadEngine, hooks: RecordingHooks
) -> None:
    hooks.refuse[HookEvent.PRE_CREATE] = HookRejected("no .exe here", status=403)
    with pytest.raises(HookRejected) as refused:
        await engine.create(length=10, metadata={"filename": "a.exe"})
    assert refused.value.status == 403
    assert await engine.sessions.list_all() == []
    assert hooks.asked[0][1].metadata == {"filename": "a.exe"}
    assert hooks.told == []


async def test_pre_create_adds_metadata_and_post_create_is_told(
    engine: UploadEngine, hooks: RecordingHooks
) -> None:
    hooks.add_metadata = {"scanned": "yes"}
    session = await engine.create(length=10, metadata={"filename": "a.txt"})
    stored = await engine.sessions.load(session.id)
    assert stored.metadata == {"filename": "a.txt", "scanned": "yes"}
    assert hooks.told == [(HookEvent.POST_CREATE, session.id)]


async def test_post_finish_is_written_with_the_finish_once(
    engine: UploadEngine, hooks: RecordingHooks
) -> None:
    session = await engine.create(length=5, metadata={})
    await write(engine, session.id, b"hello")
    assert (HookEvent.POST_RECEIVE, session.id) in hooks.told
    finished = await engine.finish(session.id)
    await engine.finish(session.id)  # already finished: nothing more
    assert [e for e, _ in hooks.asked] == [HookEvent.PRE_CREATE, HookEvent.PRE_FINISH]
    assert await pending(engine) == [
        {"event": "post-finish", "id": session.id, "sha256": finished.sha256}
    ]
    assert hooks.woken == 1


async def test_pre_finish_refusal_terminates_the_upload(
    engine: UploadEngine, hooks: RecordingHooks
) -> None:
    session = await engine.create(length=5, metadata={})
    await write(engine, session.id, b"virus")
    hooks.refuse[HookEvent.PRE_FINISH] = HookRejected("infected", status=422)
    with pytest.raises(HookRejected):
        await engine.finish(session.id)
    with pytest.raises(UploadNotFound):
        await engine.get(session.id)
    assert await pending(engine) == [
        {
            "event": "post-terminate",
            "id": session.id,
            "sha256": None,
            "reason": "pre-finish: infected",
        }
    ]


async def test_pre_finish_unavailable_keeps_the_upload_to_finish_later(
    engine: UploadEngine, hooks: RecordingHooks
) -> None:
    session = await engine.create(length=5, metadata={})
    await write(engine, session.id, b"hello")
    hooks.refuse[HookEvent.PRE_FINISH] = HookUnavailable("the hook did not answer")
    with pytest.raises(HookUnavailable):
        await engine.finish(session.id)
    assert not (await engine.get(session.id)).is_finished
    assert await pending(engine) == []
    del hooks.refuse[HookEvent.PRE_FINISH]
    assert (await engine.finish(session.id)).is_finished
    assert [entry["event"] for entry in await pending(engine)] == ["post-finish"]


async def test_delete_and_expiry_write_their_entries(
    open_engine: Callable[..., UploadEngine], hooks: RecordingHooks
) -> None:
    now = [1000.0]
    engine = open_engine(hooks=hooks, clock=lambda: now[0], expire_unstarted=10.0)
    deleted = await engine.create(length=5, metadata={})
    expired = await engine.create(length=5, metadata={})
    await engine.delete(deleted.id)
    now[0] += 60
    assert await engine.sweep_expired() == 1
    events = {(entry["event"], entry["id"]) for entry in await pending(engine)}
    assert events == {("post-terminate", deleted.id), ("post-expire", expired.id)}


async def test_post_receive_is_throttled_per_upload(
    open_engine: Callable[..., UploadEngine], hooks: RecordingHooks
) -> None:
    now = [1000.0]
    engine = open_engine(hooks=hooks, hook_progress_interval=5.0, clock=lambda: now[0])
    first = await engine.create(length=30, metadata={})
    second = await engine.create(length=30, metadata={})
    for offset in (0, 10):
        await write(engine, first.id, b"a" * 10, offset)
        await write(engine, second.id, b"b" * 10, offset)
        now[0] += 1.0
    now[0] += 5.0
    await write(engine, first.id, b"a" * 10, 20)  # a record after the interval: told again
    told = [upload_id for event, upload_id in hooks.told if event is HookEvent.POST_RECEIVE]
    assert sorted(told) == sorted([first.id, second.id, first.id])
