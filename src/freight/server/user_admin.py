"""What ``freight user`` does to the user store, on a server's data directory or database.

Run while the server runs or not: the server reads the store on every request, so a user
added or a token revoked here counts from the server's next request on.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from freight.core.users import (
    IssuedToken,
    TokenRecord,
    Usage,
    User,
    UserRepository,
    issue_token,
    valid_user_name,
)
from freight.errors import BadRequest, UploadNotFound

__all__ = [
    "UserRow",
    "add_user",
    "issue",
    "list_users",
    "remove_user",
    "revoke",
    "tokens_of",
    "user_store",
]


@contextlib.asynccontextmanager
async def user_store(data_dir: Path, db: str | None) -> AsyncIterator[UserRepository]:
    """The store a server with this ``--data-dir`` (or ``--db``, for a fleet) uses."""
    users: UserRepository
    if db is not None:
        from freight.storage.pg_users import open_pg_users  # needs the "scale" extra

        users = await open_pg_users(db)
    else:
        from freight.storage.local_users import SqliteUsers

        data_dir.mkdir(parents=True, exist_ok=True)
        users = SqliteUsers(data_dir / "freight.db")
    try:
        yield users
    finally:
        await users.close()


@dataclass(frozen=True)
class UserRow:
    user: User
    usage: Usage
    tokens: int


async def add_user(
    users: UserRepository,
    name: str,
    *,
    byte_quota: int | None = None,
    file_quota: int | None = None,
    admin: bool = False,
) -> User:
    if not valid_user_name(name):
        raise BadRequest(
            f"{name!r} is not a user name: lowercase letters, digits, '.', '_' and '-',"
            " starting with a letter or digit, at most 64"
        )
    user = User(
        name, admin=admin, byte_quota=byte_quota, file_quota=file_quota, created=time.time()
    )
    await users.add_user(user)
    return user


async def list_users(users: UserRepository) -> list[UserRow]:
    now = time.time()
    return [
        UserRow(user, await users.usage(user.name, now), len(await users.list_tokens(user.name)))
        for user in await users.list_users()
    ]


async def _known(users: UserRepository, name: str) -> User:
    user = await users.get_user(name)
    if user is None:
        raise UploadNotFound(f"no user named {name!r}")
    return user


async def issue(
    users: UserRepository,
    name: str,
    *,
    lifetime: float | None = None,
    read_only: bool = False,
    rotate: bool = False,
) -> IssuedToken:
    """A new token for ``name``; with ``rotate``, every other token of theirs is revoked
    in the same step (the new one is stored first, so the user is never left without)."""
    await _known(users, name)
    now = time.time()
    expires = now + lifetime if lifetime is not None else None
    issued = issue_token(name, now, expires=expires, read_only=read_only)
    before = await users.list_tokens(name) if rotate else []
    await users.add_token(issued.record)
    for old in before:
        await users.revoke_token(old.id)
    return issued


async def tokens_of(users: UserRepository, name: str) -> list[TokenRecord]:
    await _known(users, name)
    return await users.list_tokens(name)


async def revoke(users: UserRepository, name: str, token_id: str) -> None:
    record = await users.find_token(token_id)
    if record is None or record.user != name:
        raise UploadNotFound(f"user {name!r} has no token {token_id!r}")
    await users.revoke_token(token_id)


async def remove_user(users: UserRepository, name: str) -> None:
    """Forget the user and their tokens; their files stay (admins still see them)."""
    if not await users.remove_user(name):
        raise UploadNotFound(f"no user named {name!r}")
