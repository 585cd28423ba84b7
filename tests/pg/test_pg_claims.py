"""PgClaims across two nodes on one database: overlap refused, take-over through NOTIFY,
claims of a node whose connection died freed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import asyncpg
import pytest

from freight.errors import UploadLocked
from freight.storage.pg_claims import PgClaim, PgClaims, open_pg_claims


@pytest.fixture
async def nodes(pg_dsn: str) -> AsyncIterator[tuple[PgClaims, PgClaims]]:
    a, b = await asyncio.gather(
        open_pg_claims(pg_dsn, "a", take_over_wait=5), open_pg_claims(pg_dsn, "b")
    )
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


async def test_an_overlapping_claim_from_another_node_is_refused(
    nodes: tuple[PgClaims, PgClaims],
) -> None:
    a, b = nodes
    held = await a.claim("u", 0, 100)
    with pytest.raises(UploadLocked):
        await b.claim("u", 50, 150)
    with pytest.raises(UploadLocked):
        await a.claim("u", 99, 100)
    beside = await b.claim("u", 100, 200)  # touching is not overlapping
    other = await b.claim("v", 0, 100)
    assert await b.held("u") and not await b.held("w")
    await a.release(held)
    assert (await b.claim("u", 0, 100)).start == 0
    for claim in (beside, other):
        await b.release(claim)


async def test_racing_claims_of_one_range_from_two_nodes_one_wins(
    nodes: tuple[PgClaims, PgClaims],
) -> None:
    a, b = nodes
    results = await asyncio.gather(
        *(node.claim("u", 0, 10) for node in (a, b) * 5), return_exceptions=True
    )
    assert sum(isinstance(result, PgClaim) for result in results) == 1
    assert all(isinstance(r, PgClaim | UploadLocked) for r in results), results


async def test_take_over_interrupts_the_holder_on_the_other_node(
    nodes: tuple[PgClaims, PgClaims],
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
    assert 0.04 < took < 3, took
    assert (await b.claim("u", 500, 1000)).end == 1000
    assert await b.take_over("v", 0, 10, None) is False


async def test_claims_of_a_node_whose_connection_died_are_freed(
    nodes: tuple[PgClaims, PgClaims], pg_dsn: str
) -> None:
    a, b = nodes
    lost: list[int | None] = []
    await a.claim("u", 0, 100, lost.append)
    admin = await asyncpg.connect(pg_dsn)
    try:
        # The listener connection (outside the pool) is the node's identity.
        pid = await admin.fetchval(
            "SELECT holder_pid FROM freight_claims WHERE upload_id = 'u' AND node = 'a'"
        )
        await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await admin.close()
    deadline = time.monotonic() + 5
    while not lost and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert lost == [None]  # the node stopped its own writers at once
    assert not await b.held("u")
    assert (await b.claim("u", 0, 100)).start == 0
