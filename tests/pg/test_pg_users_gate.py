"""Two nodes sharing one PostgreSQL see a revocation at once: nothing is cached per node."""

from __future__ import annotations

import asyncio

import pytest

from freight.core.session import UploadSession, new_upload_id
from freight.core.users import Principal, User, issue_token
from freight.errors import QuotaExceeded, Unauthorized, UploadNotFound
from freight.server.principals import Gate, check_visible
from freight.storage.pg_sessions import open_pg_sessions
from freight.storage.pg_users import open_pg_users


async def test_a_token_revoked_through_one_node_is_refused_by_the_other(pg_dsn: str) -> None:
    first, second = await open_pg_users(pg_dsn), await open_pg_users(pg_dsn)
    try:
        await first.add_user(User("alice"))
        token = issue_token("alice", 1.0)
        await first.add_token(token.record)
        node_a, node_b = Gate(None, first), Gate(None, second)
        assert (await node_b.identify(token.plain.encode())).name == "alice"
        assert await first.revoke_token(token.record.id)
        with pytest.raises(Unauthorized):
            await node_b.identify(token.plain.encode())
        with pytest.raises(Unauthorized):
            await node_a.identify(token.plain.encode())
        assert await node_a.link_key() == await node_b.link_key()  # links work on any node
    finally:
        await first.close()
        await second.close()


async def test_another_users_upload_and_a_missing_one_read_the_same(pg_dsn: str) -> None:
    sessions = await open_pg_sessions(pg_dsn)
    try:
        theirs = UploadSession(new_upload_id(), 5, {}, 1.0, None, owner="bob")
        await sessions.create(theirs)
        alice = Principal("alice", admin=False)
        messages = []
        for upload_id in (theirs.id, new_upload_id()):
            with pytest.raises(UploadNotFound) as refused:
                await check_visible(alice, sessions, upload_id)
            messages.append(refused.value.to_dict())
        assert messages[0] == messages[1]
        await check_visible(Principal("bob", admin=False), sessions, theirs.id)
    finally:
        await sessions.close()


async def test_two_nodes_creating_at_once_cannot_both_fit_in_one_quota(pg_dsn: str) -> None:
    stores = [await open_pg_users(pg_dsn) for _ in range(2)]
    sessions = await open_pg_sessions(pg_dsn)
    try:
        await stores[0].add_user(User("carol", byte_quota=1000))
        carol = Principal("carol", admin=False)

        async def create_through(gate: Gate) -> bool:
            try:
                async with gate.creating(carol, 600):
                    await asyncio.sleep(0.3)  # the other node checks meanwhile
                    upload = UploadSession(new_upload_id(), 600, {}, 1.0, None, owner="carol")
                    await sessions.create(upload)
            except QuotaExceeded:
                return False
            return True

        results = await asyncio.gather(*(create_through(Gate(None, s)) for s in stores))
        assert sorted(results) == [False, True]
    finally:
        for store in stores:
            await store.close()
        await sessions.close()
