"""The event hub: publishing costs the same for any number of watchers, and a watcher that
looks late gets each upload's latest state, never losing how an upload began or ended."""

from __future__ import annotations

import asyncio
import time

from freight.core.events import EventHub, UploadEvent, UploadEventKind

K = UploadEventKind


def event(kind: UploadEventKind, upload_id: str, received: int = 0) -> UploadEvent:
    return UploadEvent(kind, upload_id, "f", 100, received, received, 0.0)


def lifecycle(hub: EventHub, upload_id: str, progress: int = 50) -> None:
    hub.publish(event(K.CREATED, upload_id))
    for received in range(1, progress + 1):
        hub.publish(event(K.PROGRESS, upload_id, received))
    hub.publish(event(K.FINISHED, upload_id, 100))


def test_a_late_watcher_gets_created_latest_and_finished_of_every_upload() -> None:
    hub = EventHub()
    with hub.watch() as watcher:
        for n in range(300):  # far more events than the old per-subscriber queue (256)
            lifecycle(hub, f"u{n}")
        hub.publish(event(K.CREATED, "open"))
        hub.publish(event(K.PROGRESS, "open", 7))
        seen = watcher.take()
    assert len(seen) == 300 * 2 + 2  # no progress in between is kept for it
    for n in range(300):
        assert [e.kind for e in seen if e.upload_id == f"u{n}"] == [K.CREATED, K.FINISHED]
    assert [(e.kind, e.received) for e in seen if e.upload_id == "open"] == [
        (K.CREATED, 0),
        (K.PROGRESS, 7),
    ]
    assert watcher.take() == []


def test_what_the_hub_keeps_is_bounded_and_a_watcher_left_behind_knows() -> None:
    hub = EventHub(max_ended=10)
    with hub.watch() as late, hub.watch() as current:
        for n in range(50):
            lifecycle(hub, f"u{n}", progress=2)
            current.take()
        assert len(hub._ended) == 10 and not hub._live
        assert late.behind and not current.behind
        assert late.snapshot(100) == []  # nothing in progress; it starts again from here
        assert not late.behind


def test_the_snapshot_lists_uploads_in_progress_newest_first_capped() -> None:
    hub = EventHub()
    for n in range(5):
        hub.publish(event(K.CREATED, f"u{n}"))
    hub.publish(event(K.FINISHED, "u0", 100))
    hub.publish(event(K.PROGRESS, "u1", 3))
    with hub.watch() as watcher:
        assert [e.upload_id for e in watcher.snapshot(3)] == ["u1", "u4", "u3"]
        assert watcher.take() == []


async def test_publishing_costs_the_same_with_a_thousand_waiting_watchers() -> None:
    async def cost(watchers: int) -> float:
        hub = EventHub(coalesce=0.05)
        with_all = [hub.watch() for _ in range(watchers)]
        waiting = [asyncio.ensure_future(w.__enter__().wait(5)) for w in with_all]
        await asyncio.sleep(0)
        started = time.perf_counter()
        for n in range(2000):
            hub.publish(event(K.PROGRESS, f"u{n % 10}", n))
        took = time.perf_counter() - started
        await asyncio.wait_for(asyncio.gather(*waiting), 5)  # every watcher woke, once
        return took

    alone, watched = (
        min([await cost(0) for _ in range(3)]),
        min([await cost(1000) for _ in range(3)]),
    )
    assert watched < 3 * alone + 0.002, (alone, watched)


def test_idle_uploads_do_not_grow_the_table() -> None:
    hub = EventHub(max_live=8)
    for n in range(100):
        hub.publish(event(K.CREATED, f"u{n}"))
    hub.publish(event(K.PROGRESS, "u5", 1))  # it moved again: known again
    live = [e.upload_id for e in hub.in_progress(limit=1000)]
    assert len(live) == 8
    assert "u99" in live and "u5" in live and "u0" not in live
