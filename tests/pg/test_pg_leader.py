"""PgLeader: one node leads at a time, and another takes over within seconds when the
leader goes, including a real process killed with SIGKILL (which also holds claims)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator

import asyncpg
import pytest

from freight.errors import UploadLocked
from freight.storage.pg_claims import open_pg_claims
from freight.storage.pg_leader import PgLeader, open_pg_leader
from freight.storage.pg_link import LinkSettings


def link(name: str) -> LinkSettings:
    return LinkSettings(application_name=name, heartbeat=0.5, heartbeat_timeout=1)


@pytest.fixture
async def trio(pg_dsn: str) -> AsyncIterator[list[PgLeader]]:
    leaders = [await open_pg_leader(pg_dsn, "sweep", link(f"leader-{i}")) for i in range(3)]
    try:
        yield leaders
    finally:
        for leader in leaders:
            await leader.close()


async def _until_one_leads(leaders: list[PgLeader], timeout: float) -> PgLeader:
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        leading = [leader for leader in leaders if leader.leading]
        assert len(leading) <= 1, "two nodes lead at once"
        if leading:
            return leading[0]
        await asyncio.sleep(0.02)
    raise AssertionError(f"no node leads after {timeout} s")


async def test_one_node_leads_at_a_time(trio: list[PgLeader], pg_dsn: str) -> None:
    first = await _until_one_leads(trio, 1)
    assert trio[0] is first  # the first to ask gets it
    await asyncio.sleep(1.2)  # the others try at every heartbeat, and fail
    assert [leader.leading for leader in trio] == [True, False, False]
    assert await trio[0].is_leader() and not await trio[1].is_leader()
    other = await open_pg_leader(pg_dsn, "another job", link("other"))
    try:
        assert other.leading  # another name is another election
    finally:
        await other.close()


async def test_leadership_passes_on_when_the_leader_closes_or_is_cut(
    trio: list[PgLeader], pg_dsn: str
) -> None:
    await trio[0].close()
    began = time.monotonic()
    second = await _until_one_leads(trio[1:], 3)
    assert time.monotonic() - began < 1.5
    admin = await asyncpg.connect(pg_dsn)
    try:
        name = "leader-1" if second is trio[1] else "leader-2"
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            name,
        )
    finally:
        await admin.close()
    began = time.monotonic()
    await asyncio.sleep(0.05)
    assert not second.leading  # it knows at once
    third = await _until_one_leads(trio[1:], 3)
    assert third is not second and time.monotonic() - began < 1.5


async def test_lead_runs_the_body_while_leading_and_cancels_it_when_lost(
    trio: list[PgLeader],
) -> None:
    ran: list[str] = []
    follower = trio[1]

    async def follow() -> None:
        async with follower.lead() as term:
            ran.append("follower leads")
            await term.lost.wait()

    waiting = asyncio.create_task(follow())
    async with trio[0].lead() as term:
        ran.append("leader works")
        await asyncio.sleep(0.7)
        assert ran == ["leader works"]  # the follower still waits
        closing = asyncio.create_task(trio[0].close())
        await asyncio.sleep(10)  # cancelled by the loss, well before this
        ran.append("never")
    await closing
    assert not term.active and ran == ["leader works"]
    await _until_one_leads([follower], 3)
    await asyncio.sleep(0.05)
    assert ran == ["leader works", "follower leads"]
    waiting.cancel()


_NODE = textwrap.dedent(
    """
    import asyncio, sys
    from freight.storage.pg_claims import open_pg_claims
    from freight.storage.pg_leader import open_pg_leader

    async def main(dsn):
        claims = await open_pg_claims(dsn, "doomed")
        leader = await open_pg_leader(dsn, "sweep")
        await claims.claim("u", 0, 1 << 63, lambda rewrites: None)
        print("ready" if leader.leading else "not leading", flush=True)
        await asyncio.sleep(120)

    asyncio.run(main(sys.argv[1]))
    """
)


async def test_a_killed_node_frees_its_claims_and_leadership_within_seconds(
    pg_dsn: str,
) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", _NODE, pg_dsn], stdout=subprocess.PIPE, env=dict(os.environ)
    )
    claims = leader = None
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(child.stdout.readline), 30)
        assert line.strip() == b"ready"
        claims = await open_pg_claims(pg_dsn, "survivor", take_over_wait=1)
        leader = await open_pg_leader(pg_dsn, "sweep", link("survivor"))
        with pytest.raises(UploadLocked):
            await claims.claim("u", 100, 200)
        assert await claims.held("u") and not leader.leading
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        began = time.monotonic()
        while True:
            try:
                await claims.claim("u", 100, 200)
                break
            except UploadLocked:
                assert time.monotonic() - began < 5, "the dead node's claim still counts"
                await asyncio.sleep(0.02)
        freed = time.monotonic() - began
        await _until_one_leads([leader], 5)
        assert freed < 1, freed  # the server ends a dead process's session at once
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if claims is not None:
            await claims.close()
        if leader is not None:
            await leader.close()
