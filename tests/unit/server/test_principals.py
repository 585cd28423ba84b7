"""The gate every transport asks: who a credential stands for, and what a creation may take."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from freight.core.session import UploadSession, new_upload_id
from freight.core.users import ADMIN, Principal, User, issue_token
from freight.errors import QuotaExceeded, Unauthorized, UploadForbidden, UploadNotFound
from freight.server.principals import Gate, check_owner
from freight.storage.local_sessions import SqliteSessions
from freight.storage.local_users import SqliteUsers


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def users(tmp_path: Path) -> AsyncIterator[SqliteUsers]:
    store = SqliteUsers(tmp_path / "freight.db")
    yield store
    await store.close()


async def test_an_open_server_lets_anyone_in_as_admin_until_a_user_exists(
    users: SqliteUsers,
) -> None:
    gate = Gate(None, users)
    assert await gate.identify(None) == ADMIN
    assert await gate.identify(b"anything") == ADMIN
    assert await gate.link_key() is None
    await users.add_user(User("alice"))
    with pytest.raises(Unauthorized):
        await gate.identify(None)
    with pytest.raises(Unauthorized):
        await gate.identify(b"anything")
    assert await gate.link_key() is not None


async def test_the_servers_token_is_the_admin_and_user_tokens_are_their_users(
    users: SqliteUsers,
) -> None:
    clock = Clock()
    gate = Gate("server-token", users, clock)
    await users.add_user(User("alice"))
    await users.add_user(User("root", admin=True))
    alice = issue_token("alice", clock.now, expires=clock.now + 60, read_only=True)
    root = issue_token("root", clock.now)
    await users.add_token(alice.record)
    await users.add_token(root.record)
    assert await gate.identify(b"server-token") == ADMIN
    assert await gate.identify(alice.plain.encode()) == Principal("alice", False, True)
    assert await gate.identify(root.plain.encode()) == Principal("root", True, False)
    for wrong in (None, b"server-tokenX", alice.plain[:-1].encode() + b"x", b"\xff\xfe"):
        with pytest.raises(Unauthorized):
            await gate.identify(wrong)
    clock.now += 60  # expired
    with pytest.raises(Unauthorized):
        await gate.identify(alice.plain.encode())
    await users.revoke_token(root.record.id)
    with pytest.raises(Unauthorized):
        await gate.identify(root.plain.encode())


async def test_creating_holds_users_to_their_quotas(users: SqliteUsers, tmp_path: Path) -> None:
    sessions = SqliteSessions(tmp_path / "freight.db")
    gate = Gate(None, users, Clock())
    await users.add_user(User("alice", byte_quota=100, file_quota=2))
    alice = Principal("alice", admin=False)
    try:
        async with gate.creating(alice, 60):
            await sessions.create(
                UploadSession(new_upload_id(), 60, {}, 1000.0, 2000.0, owner="alice")
            )
        with pytest.raises(QuotaExceeded, match="over their quota"):
            async with gate.creating(alice, 41):
                pass
        with pytest.raises(QuotaExceeded, match="declare"):
            async with gate.creating(alice, None):
                pass
        async with gate.creating(alice, 40):
            await sessions.create(
                UploadSession(new_upload_id(), 40, {}, 1000.0, 2000.0, owner="alice")
            )
        with pytest.raises(QuotaExceeded, match="2 of 2 files"):
            async with gate.creating(alice, 0):
                pass
        with pytest.raises(UploadForbidden):
            async with gate.creating(Principal("alice", admin=False, read_only=True), 1):
                pass
        async with gate.creating(ADMIN, 10**12):  # the server's admin has no quota
            pass
    finally:
        await sessions.close()


def test_another_users_upload_does_not_exist_for_them() -> None:
    theirs = UploadSession(new_upload_id(), 1, {}, 0.0, None, owner="bob")
    nobodys = UploadSession(new_upload_id(), 1, {}, 0.0, None)
    alice = Principal("alice", admin=False)
    for session in (theirs, nobodys):
        with pytest.raises(UploadNotFound):
            check_owner(alice, session)
        assert check_owner(ADMIN, session) is session
    assert check_owner(Principal("bob", admin=False), theirs) is theirs
