"""PgClaims across nodes on one database: each node is its own PgClaims with its own
connections (its dedicated link holds its node lock), as separate processes would be."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator

import asyncpg
import pytest

from freight.core.claims import TAKE_OVER_WAIT
from freight.core.session import UploadSession
from freight.errors import StorageUnavailable, UploadLocked
from freight.storage.pg_claims import RECHECK, PgClaim, PgClaims, open_pg_claims
from freight.storage.pg_link import LinkSettings
from freight.storage.pg_sessions import PgSessions

Nodes = tuple[PgClaims, PgClaims]


def upload(upload_id: str) -> UploadSession:
    return UploadSession(id=upload_id, length=100, metadata={}, created=1.0, expires=None)


def link(name: str) -> LinkSettings:
    return LinkSettings(application_name=f"claims-{name}", heartbeat=0.5, heartbeat_timeout=1)


@pytest.fixture
async def nodes(pg_dsn: str) -> AsyncIterator[Nodes]:
    a, b = await asyncio.gather(
        open_pg_claims(pg_dsn, "a", link_settings=link("a"), take_over_wait=1.5),
        open_pg_claims(pg_dsn, "b", link_settings=link("b"), take_over_wait=1.5),
    )
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


async def _link_pid(dsn: str, name: str) -> int:
    admin = await asyncpg.connect(dsn)
    try:
        pid = await admin.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1", f"claims-{name}"
        )
    finally:
        await admin.close()
    assert pid is not None
    return int(pid)


async def _terminate(dsn: str, pid: int) -> None:
    admin = await asyncpg.connect(dsn)
    try:
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await admin.close()


async def _until(check: object, timeout: float) -> float:
    """Seconds until ``check()`` (sync or async) is true; fails after ``timeout``."""
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        result = check()  # type: ignore[operator]
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return time.monotonic() - began
        await asyncio.sleep(0.02)
    raise AssertionError(f"not within {timeout} s")


async def test_an_overlapping_claim_from_another_node_is_refused(nodes: Nodes) -> None:
    a, b = nodes
    held = await a.claim("u", 0, 100)
    with pytest.raises(UploadLocked):
        await b.claim("u", 50, 150)
    with pytest.raises(UploadLocked):
        await a.claim("u", 99, 100)
    beside = await b.claim("u", 100, 200)  # touching is not overlapping
    other = await b.claim("v", 0, 1 << 63)  # EVERYTHING fits
    with pytest.raises(UploadLocked):
        await a.claim("v", 1 << 62, 1 << 63)
    await a.release(held)
    again = await b.claim("u", 0, 100)
    for claim in (beside, other, again):
        await b.release(claim)
    assert not await a.held("u") and not await a.held("v")


async def test_racing_claims_of_one_range_from_two_nodes_one_wins(nodes: Nodes) -> None:
    a, b = nodes
    results = await asyncio.gather(
        *(node.claim("u", 0, 10) for node in (a, b) * 5), return_exceptions=True
    )
    assert sum(isinstance(result, PgClaim) for result in results) == 1
    assert all(isinstance(r, PgClaim | UploadLocked) for r in results), results


async def test_parallel_disjoint_ranges_through_different_nodes_are_all_claimed(
    nodes: Nodes,
) -> None:
    a, b = nodes
    claims = await asyncio.gather(
        *((a, b)[i % 2].claim("u", i * 10, i * 10 + 10) for i in range(10))
    )
    assert sorted(c.start for c in claims) == list(range(0, 100, 10))
    assert a.held_here("u") and b.held_here("u")
    with pytest.raises(UploadLocked):
        await a.claim("u", 95, 105)


async def test_held_sees_every_node_held_here_only_this_one(nodes: Nodes) -> None:
    a, b = nodes
    claim = await a.claim("u", 0, 10)
    assert await a.held("u") and await b.held("u")
    assert a.held_here("u") and not b.held_here("u")
    assert not await b.held("w") and not b.held_here("w")
    await a.release(claim)
    assert not await b.held("u") and not a.held_here("u")


async def test_take_over_interrupts_the_holder_on_the_other_node_and_is_told(
    nodes: Nodes,
) -> None:
    a, b = nodes
    asked: list[int | None] = []
    holder: list[PgClaim] = []

    def interrupt(rewrites: int | None) -> None:
        asked.append(rewrites)
        # The holder keeps what is durable, then lets go (a moment later).
        asyncio.get_running_loop().call_later(
            0.05, lambda: asyncio.ensure_future(a.release(holder[0]))
        )

    holder.append(await a.claim("u", 0, 1000, interrupt))
    began = time.monotonic()
    assert await b.take_over("u", 500, 1000, 500) is True
    took = time.monotonic() - began
    assert asked == [500]
    # Told by the holder's release, not by the fallback re-read.
    assert 0.04 < took < RECHECK * 0.8, took
    assert (await b.claim("u", 500, 1000)).end == 1000
    assert await b.take_over("v", 0, 10, None) is False


async def test_take_over_waits_a_bounded_time_for_a_holder_that_ignores_it(
    nodes: Nodes,
) -> None:
    a, b = nodes
    asked: list[int | None] = []
    await a.claim("u", 0, 100, asked.append)
    began = time.monotonic()
    assert await b.take_over("u", 0, 100, None) is True
    took = time.monotonic() - began
    assert asked == [None]
    assert 1.4 < took < 3, took
    with pytest.raises(UploadLocked):
        await b.claim("u", 0, 100)


async def test_take_over_leaves_work_that_cannot_be_interrupted(nodes: Nodes) -> None:
    a, b = nodes
    asked: list[int | None] = []
    await a.claim("u", 0, 10, asked.append)
    await a.claim("u", 10, 20)  # no interrupt: finishing work, say
    began = time.monotonic()
    assert await b.take_over("u", 0, 20, 0) is False
    assert time.monotonic() - began < 1 and asked == []
    assert await b.take_over("u", 20, 30, 0) is False  # nothing there


async def test_take_over_of_a_claim_of_the_same_node(nodes: Nodes) -> None:
    a, _ = nodes
    holder: list[PgClaim] = []
    asked: list[int | None] = []
    releasing: list[asyncio.Future[None]] = []

    def interrupt(rewrites: int | None) -> None:
        asked.append(rewrites)
        releasing.append(asyncio.ensure_future(a.release(holder[0])))

    holder.append(await a.claim("u", 0, 100, interrupt))
    began = time.monotonic()
    assert await a.take_over("u", 0, 100, 7) is True
    assert asked == [7] and time.monotonic() - began < RECHECK * 0.8


async def test_interrupt_all_asks_this_nodes_holders_and_waits(nodes: Nodes) -> None:
    a, b = nodes
    asked: list[str] = []
    claims: list[PgClaim] = []

    def interrupt(rewrites: int | None) -> None:
        asked.append("x")
        asyncio.get_running_loop().call_later(
            0.05, lambda: asyncio.ensure_future(a.release(claims.pop()))
        )

    claims.append(await a.claim("u", 0, 10, interrupt))
    claims.append(await a.claim("v", 0, 10, interrupt))
    other: list[int | None] = []
    await b.claim("w", 0, 10, other.append)
    await a.interrupt_all()
    assert asked == ["x", "x"] and not claims and other == []
    assert not a.held_here("u") and not await b.held("v")


async def test_a_node_whose_link_is_cut_loses_its_claims_and_its_fence(
    nodes: Nodes, pg_dsn: str, pg_sessions: PgSessions
) -> None:
    a, b = nodes
    await pg_sessions.create(upload("u"))
    lost: list[int | None] = []
    claim = await a.claim("u", 0, 100, lost.append)
    ranges = await pg_sessions.record_received("u", 0, 10, expires=None, fence=claim)
    assert ranges.total() == 10
    with pytest.raises(UploadLocked):
        await b.claim("u", 0, 100)
    await _terminate(pg_dsn, await _link_pid(pg_dsn, "a"))
    await _until(lambda: lost, 2)
    assert lost == [None]  # the node stopped its own writers at once
    assert not await b.held("u")
    taken = await b.claim("u", 0, 100)
    # The old holder records nothing more: its fence no longer counts.
    with pytest.raises(UploadLocked):
        await pg_sessions.record_received("u", 10, 20, expires=None, fence=claim)
    assert (await pg_sessions.record_received("u", 10, 20, expires=None, fence=taken)).total() == 20
    assert (await pg_sessions.record_received("u", 20, 30, expires=None)).total() == 30
    # The node connects again under a new key and claims again.
    await _until(lambda: a.node_key is not None, 5)
    assert a.node_key != claim.node_key
    await a.claim("v", 0, 10)


async def test_a_released_claim_fences_too(nodes: Nodes, pg_sessions: PgSessions) -> None:
    a, _ = nodes
    await pg_sessions.create(upload("u"))
    claim = await a.claim("u", 0, 100)
    await a.release(claim)
    with pytest.raises(UploadLocked):
        await pg_sessions.record_received("u", 0, 10, expires=None, fence=claim)
    other = await a.claim("x", 0, 100)  # a live claim of another upload fences nothing here
    with pytest.raises(UploadLocked):
        await pg_sessions.record_received("u", 0, 10, expires=None, fence=other)


async def test_a_link_that_stops_answering_interrupts_its_claims(nodes: Nodes, pg_dsn: str) -> None:
    """A stalled database (or a cut network) shows as a heartbeat with no answer."""
    a, b = nodes
    lost: list[int | None] = []
    await a.claim("u", 0, 100, lost.append)
    pid = await _link_pid(pg_dsn, "a")
    os.kill(pid, signal.SIGSTOP)  # the server's process for a's link: no answers
    try:
        took = await _until(lambda: lost, 5)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert lost == [None] and took < 3, took
    with pytest.raises(StorageUnavailable):
        await a.claim("v", 0, 10)
    await _until(lambda: a.node_key is not None, 5)
    await _until(lambda: b.claim("u", 0, 100), 5)  # a's session ended: its row is dead


def test_the_default_take_over_wait_is_the_engines() -> None:
    assert PgClaims.__init__.__kwdefaults__ == {"take_over_wait": TAKE_OVER_WAIT}
