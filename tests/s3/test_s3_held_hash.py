"""The running hash over bytes that arrived out of order, on S3 + PostgreSQL in one
process: a node that lost its claim hashes nothing into the session (fencing), a node that
holds one saves the state, and finishing then reads nothing back."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from freight.core.active_upload import record
from freight.core.engine import UploadEngine
from freight.core.ports import Backend
from freight.storage.pg_claims import PgClaims, open_pg_claims
from freight.storage.pg_link import LinkSettings
from freight.storage.pg_sessions import PgSessions
from freight.storage.s3_blobs import S3Blobs
from tests.s3.seaweed import Seaweed
from tests.s3.stores import TEST_PART_SIZE, open_store

P = TEST_PART_SIZE


@pytest.fixture
async def node(
    seaweed: Seaweed, s3_bucket: str, pg_dsn: str, pg_sessions: PgSessions, tmp_path: Path
) -> AsyncIterator[tuple[UploadEngine, PgClaims]]:
    store = await open_store(seaweed, s3_bucket, tmp_path / "spool", pg_dsn)
    claims = await open_pg_claims(
        pg_dsn, "a", link_settings=LinkSettings(application_name="held-a", heartbeat=0.5)
    )
    engine = UploadEngine(Backend(sessions=pg_sessions, blobs=store, claims=claims), sync_every=P)
    try:
        yield engine, claims
    finally:
        await engine.close()
        await claims.close()


async def test_a_node_that_lost_its_claim_saves_no_hash_state(
    node: tuple[UploadEngine, PgClaims],
) -> None:
    engine, claims = node
    store = engine.blobs
    assert isinstance(store, S3Blobs)
    data = os.urandom(3 * P)
    session = await engine.create(length=len(data), metadata={})
    for n in (2, 1):  # ahead of the prefix: the spool holds them once uploaded
        async with engine.writer(session.id, n * P, end=(n + 1) * P, sequential=False) as w:
            await w.write(data[n * P : (n + 1) * P])
            await w.commit()
    # Part 0 reaches the bucket and the record under a claim, past the engine's writer.
    writer = await store.open_writer(session.id)

    def write_part_0() -> None:
        writer.write_at(0, data[:P])
        writer.sync()
        writer.close()

    await asyncio.to_thread(write_part_0)
    active = await engine.activate(session.id)
    claim = await claims.claim(session.id, 0, P)
    await record(engine.sessions, active, 0, P, active.session.expires, claim)
    await claims.release(claim)  # lost before the hash could be saved

    await engine.hash_follower.after_record(active, claim, (0, P))
    assert (await engine.sessions.load(session.id)).hashed_offset == 0

    live = await claims.claim(session.id, 0, P)
    await engine.hash_follower.after_record(active, live, (0, P))
    await claims.release(live)
    saved = await engine.sessions.load(session.id)
    assert saved.hashed_offset == 3 * P  # hashed from the spool, under a claim that counts
    finished = await engine.finish(session.id)
    assert finished.sha256 == hashlib.sha256(data).hexdigest()
    assert engine.hash_follower.settled_bytes == 0


async def test_bytes_stored_as_a_piece_are_hashed_from_it_when_the_spool_lacks_them(
    node: tuple[UploadEngine, PgClaims],
) -> None:
    """A partial part stored as a piece (its spool gone, as after a restart) is read back
    with a ranged GET of the piece when the prefix reaches it, not at finish."""
    engine, _ = node
    store = engine.blobs
    assert isinstance(store, S3Blobs)
    data = os.urandom(2 * P + 999)
    half = P + P // 2
    session = await engine.create(length=len(data), metadata={})
    async with engine.writer(session.id, P, end=half, sequential=False) as writer:
        await writer.write(data[P:half])
        await writer.commit()
    table = await store.load_table(session.id)
    assert table is not None and [(p.start, p.end) for p in table.pieces] == [(P, half)]
    store.spools.forget(session.id)  # this node no longer has those bytes
    async with engine.writer(session.id, 0, end=P, sequential=False) as writer:
        await writer.write(data[:P])
        await writer.commit()
    saved = await engine.sessions.load(session.id)
    assert saved.hashed_offset == half  # part 0 inline, then the piece
    held = engine.hash_follower.held
    assert held is not None and held.hashed_bytes == half - P
    async with engine.writer(session.id, half) as writer:
        await writer.write(data[half:])
        await writer.commit()
    finished = await engine.finish(session.id)
    assert finished.sha256 == hashlib.sha256(data).hexdigest()
    assert engine.hash_follower.settled_bytes == 0
