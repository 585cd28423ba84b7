"""The UserRepository contract, run over SQLite and PostgreSQL (same database as sessions)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from freight.core.ports import SessionRepository
from freight.core.session import ConcatKind, UploadSession, UploadState, new_upload_id
from freight.core.users import (
    Usage,
    User,
    UserRepository,
    issue_token,
    parse_token,
    secret_matches,
)
from freight.errors import UserExists
from tests.contract.backends import USER_BACKENDS, UserBackend

Stores = tuple[UserRepository, SessionRepository]


@pytest.fixture(params=sorted(USER_BACKENDS))
def user_backend(request: pytest.FixtureRequest) -> UserBackend:
    return USER_BACKENDS[request.param]


@pytest.fixture
def user_place(user_backend: UserBackend, request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue(user_backend.place)


@pytest.fixture
async def stores(user_backend: UserBackend, user_place: Any) -> AsyncIterator[Stores]:
    users, sessions = await user_backend.open(user_place)
    yield users, sessions
    await users.close()
    await sessions.close()


def upload(owner: str | None, length: int | None, **fields: Any) -> UploadSession:
    fields.setdefault("created", 1000.0)
    fields.setdefault("expires", 2000.0)
    return UploadSession(id=new_upload_id(), length=length, metadata={}, owner=owner, **fields)


async def test_users_round_trip_and_names_are_unique(stores: Stores) -> None:
    users, _ = stores
    assert not await users.has_users()
    alice = User("alice", byte_quota=500, file_quota=3, created=12.5)
    await users.add_user(alice)
    await users.add_user(User("root", admin=True, created=13.0))
    with pytest.raises(UserExists):
        await users.add_user(User("alice"))
    assert await users.has_users()
    assert await users.get_user("alice") == alice
    assert await users.get_user("nobody") is None
    assert [u.name for u in await users.list_users()] == ["alice", "root"]
    assert await users.set_quota("alice", None, 7)
    assert await users.get_user("alice") == User("alice", file_quota=7, created=12.5)
    assert not await users.set_quota("nobody", 1, 1)


async def test_tokens_are_stored_hashed_listed_and_revoked(stores: Stores) -> None:
    users, _ = stores
    await users.add_user(User("alice"))
    first = issue_token("alice", 10.0)
    second = issue_token("alice", 11.0, expires=50.0, read_only=True)
    await users.add_token(first.record)
    await users.add_token(second.record)
    parsed = parse_token(second.plain)
    assert parsed is not None
    found = await users.find_token(parsed[0])
    assert found == second.record
    assert found.read_only and found.expired(50.0) and not found.expired(49.0)
    assert secret_matches(found, parsed[1])
    assert not secret_matches(found, parsed[1][:-1] + ("A" if parsed[1][-1] != "A" else "B"))
    assert parsed[1].encode() not in found.digest  # only the hash is kept
    assert [t.id for t in await users.list_tokens("alice")] == [first.record.id, second.record.id]
    assert await users.revoke_token(first.record.id)
    assert not await users.revoke_token(first.record.id)
    assert await users.find_token(first.record.id) is None
    assert await users.revoke_tokens("alice") == 1
    assert await users.list_tokens("alice") == []


async def test_removing_a_user_removes_their_tokens(stores: Stores) -> None:
    users, _ = stores
    await users.add_user(User("bob"))
    token = issue_token("bob", 1.0)
    await users.add_token(token.record)
    assert await users.remove_user("bob")
    assert not await users.remove_user("bob")
    assert await users.find_token(token.record.id) is None
    assert not await users.has_users()


async def test_usage_counts_declared_lengths_of_unfinished_and_sizes_of_finished(
    stores: Stores,
) -> None:
    users, sessions = stores
    assert await users.usage("alice", 1500.0) == Usage(0, 0)
    final_id = new_upload_id()
    for session in [
        upload("alice", 100),  # unfinished, declared 100
        upload("alice", 40, state=UploadState.FINISHED, expires=None, finished=1100.0),
        upload("alice", None),  # deferred length: a file, no bytes yet
        upload("alice", 999, expires=1400.0),  # expired: counts no more
        upload("alice", 7, concat_kind=ConcatKind.PARTIAL, used_by=final_id),  # via its final
        upload("bob", 5000),
        upload(None, 5000),
    ]:
        await sessions.create(session)
    assert await users.usage("alice", 1500.0) == Usage(bytes=140, files=3)
    assert await users.usage("bob", 1500.0) == Usage(bytes=5000, files=1)


async def test_listings_can_be_limited_to_one_owner(stores: Stores) -> None:
    _, sessions = stores
    mine = upload("alice", 10, created=1.0)
    theirs = upload("bob", 10, created=2.0)
    nobodys = upload(None, 10, created=3.0)
    for session in (mine, theirs, nobodys):
        await sessions.create(session)
    assert [s.id for s in await sessions.list_page("uploads", None, 10, 0.0, "alice")] == [mine.id]
    everyone = await sessions.list_page("uploads", None, 10, 0.0)
    assert [s.owner for s in everyone] == ["alice", "bob", None]
    assert (await sessions.load(theirs.id)).owner == "bob"


async def test_the_link_key_is_made_once(stores: Stores) -> None:
    users, _ = stores
    key = await users.link_key()
    assert len(key) == 32
    assert await users.link_key() == key
