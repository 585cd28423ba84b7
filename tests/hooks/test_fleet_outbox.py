"""Two nodes' delivery workers on one PostgreSQL outbox: every entry is delivered, and
(with the receiver answering) by one node only."""

from __future__ import annotations

import asyncio

from freight.core.hooks import HookEvent
from freight.core.session import UploadSession
from freight.server.hooks import HookDispatcher, HookSettings
from freight.storage.pg_sessions import open_pg_sessions
from tests.hooks.receiver import SECRET, Receiver

ENTRIES = 30


async def test_two_nodes_deliver_each_entry_once(receiver: Receiver, pg_dsn: str) -> None:
    settings = HookSettings(
        url=receiver.url, command=None, secret=SECRET, events=frozenset(HookEvent), timeout=5.0
    )
    nodes = [await open_pg_sessions(pg_dsn), await open_pg_sessions(pg_dsn)]
    dispatchers = [HookDispatcher(settings), HookDispatcher(settings)]
    try:
        receiver.delay = 0.05  # deliveries overlap: both nodes are busy at once
        for dispatcher, sessions in zip(dispatchers, nodes, strict=True):
            dispatcher.start(sessions)
        for n in range(ENTRIES):
            session = UploadSession(
                id=f"upload{n:02}", length=1, metadata={}, created=float(n), expires=None
            )
            await nodes[n % 2].create(session)
            entries = dispatchers[n % 2].outbox(HookEvent.POST_EXPIRE, session, float(n))
            await nodes[n % 2].delete(session.id, outbox=entries)
            dispatchers[n % 2].outbox_written()
        await asyncio.to_thread(receiver.wait_for, "post-expire", ENTRIES, 30)
        await asyncio.sleep(2.0)  # past both workers' next looks: nothing more comes
        keys = [r.key for r in receiver.events("post-expire")]
        assert sorted(keys) == [f"post-expire:upload{n:02}" for n in range(ENTRIES)]
        assert await nodes[0].outbox_depth() == 0
    finally:
        for dispatcher in dispatchers:
            await dispatcher.close()
        for sessions in nodes:
            await sessions.close()
