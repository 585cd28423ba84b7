"""Two nodes sharing one PostgreSQL see a revocation at once: nothing is cached per node."""

from __future__ import annotations

import pytest

from freight.core.users import User, issue_token
from freight.errors import Unauthorized
from freight.server.principals import Gate
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
