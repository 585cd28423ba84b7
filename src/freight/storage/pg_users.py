"""Users and tokens in PostgreSQL, shared by every node of a fleet.

The same tables as the local backend's (:mod:`.local_users`), as the ``users`` component
of :func:`~freight.storage.pg_schema.ensure_schema`. Nothing is cached on a node: every
lookup is one query, so a token revoked through any node (or ``freight user --db``) is
refused by every node's next request. Usage is one aggregate over ``freight_uploads``.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator
from typing import Any, Final

import asyncpg

from freight.core.users import TokenRecord, Usage, User
from freight.errors import FreightError, UserExists
from freight.storage.pg_pool import PoolSettings, create_pool, translate
from freight.storage.pg_schema import ensure_schema

__all__ = ["PgUsers", "open_pg_users"]

COMPONENT = "users"
_MIGRATIONS: Final = (
    (
        """
        CREATE TABLE freight_users (
            name text PRIMARY KEY,
            admin boolean NOT NULL DEFAULT false,
            byte_quota bigint,
            file_quota bigint,
            created double precision NOT NULL
        )
        """,
        """
        CREATE TABLE freight_user_tokens (
            id text PRIMARY KEY,
            user_name text NOT NULL REFERENCES freight_users ON DELETE CASCADE,
            digest bytea NOT NULL,
            created double precision NOT NULL,
            expires double precision,
            read_only boolean NOT NULL DEFAULT false
        )
        """,
        "CREATE INDEX freight_user_tokens_user ON freight_user_tokens (user_name)",
        "CREATE TABLE freight_server_keys (name text PRIMARY KEY, value bytea NOT NULL)",
    ),
)
_USER: Final = "SELECT name, admin, byte_quota, file_quota, created FROM freight_users"
_TOKEN: Final = "SELECT id, user_name, digest, created, expires, read_only FROM freight_user_tokens"
_USAGE: Final = (
    "SELECT count(*) AS files, coalesce(sum(coalesce(length, 0)), 0) AS bytes"
    " FROM freight_uploads WHERE owner = $1 AND used_by IS NULL"
    " AND (state = 'finished' OR expires IS NULL OR expires >= $2)"
)


def _user(row: asyncpg.Record) -> User:
    return User(
        name=row["name"],
        admin=row["admin"],
        byte_quota=row["byte_quota"],
        file_quota=row["file_quota"],
        created=row["created"],
    )


def _token(row: asyncpg.Record) -> TokenRecord:
    return TokenRecord(
        id=row["id"],
        user=row["user_name"],
        digest=bytes(row["digest"]),
        created=row["created"],
        expires=row["expires"],
        read_only=row["read_only"],
    )


class PgUsers:
    """:class:`~freight.core.users.UserRepository` over a pool of connections."""

    def __init__(self, pool: asyncpg.Pool, *, acquire_timeout: float = 15.0) -> None:
        self._pool = pool
        self._acquire_timeout = acquire_timeout

    async def _fetch(self, what: str, sql: str, *args: Any) -> list[asyncpg.Record]:
        with translate(what):
            async with self._pool.acquire(timeout=self._acquire_timeout) as connection:
                return await connection.fetch(sql, *args)

    async def _count(self, what: str, sql: str, *args: Any) -> int:
        """Rows a changing statement touched (``sql`` ends in ``RETURNING 1``)."""
        return len(await self._fetch(what, sql, *args))

    async def add_user(self, user: User) -> None:
        try:
            await self._fetch(
                "adding a user",
                "INSERT INTO freight_users (name, admin, byte_quota, file_quota, created)"
                " VALUES ($1, $2, $3, $4, $5)",
                user.name,
                user.admin,
                user.byte_quota,
                user.file_quota,
                user.created,
            )
        except FreightError as exc:
            if isinstance(exc.__cause__, asyncpg.UniqueViolationError):
                raise UserExists(f"a user named {user.name!r} already exists") from exc
            raise

    async def get_user(self, name: str) -> User | None:
        rows = await self._fetch("loading a user", f"{_USER} WHERE name = $1", name)
        return _user(rows[0]) if rows else None

    async def list_users(self) -> list[User]:
        return [_user(row) for row in await self._fetch("listing users", f"{_USER} ORDER BY name")]

    async def set_quota(self, name: str, byte_quota: int | None, file_quota: int | None) -> bool:
        sql = (
            "UPDATE freight_users SET byte_quota = $2, file_quota = $3 WHERE name = $1 RETURNING 1"
        )
        return await self._count("changing a quota", sql, name, byte_quota, file_quota) > 0

    async def remove_user(self, name: str) -> bool:
        sql = "DELETE FROM freight_users WHERE name = $1 RETURNING 1"  # tokens cascade
        return await self._count("removing a user", sql, name) > 0

    async def has_users(self) -> bool:
        return bool(await self._fetch("looking for users", "SELECT 1 FROM freight_users LIMIT 1"))

    async def add_token(self, record: TokenRecord) -> None:
        try:
            await self._fetch(
                "adding a token",
                "INSERT INTO freight_user_tokens"
                " (id, user_name, digest, created, expires, read_only)"
                " VALUES ($1, $2, $3, $4, $5, $6)",
                record.id,
                record.user,
                record.digest,
                record.created,
                record.expires,
                record.read_only,
            )
        except FreightError as exc:
            if isinstance(exc.__cause__, asyncpg.ForeignKeyViolationError):
                raise FreightError(f"no user named {record.user!r}") from exc
            raise

    async def find_token(self, token_id: str) -> TokenRecord | None:
        rows = await self._fetch("checking a token", f"{_TOKEN} WHERE id = $1", token_id)
        return _token(rows[0]) if rows else None

    async def list_tokens(self, user: str) -> list[TokenRecord]:
        sql = f"{_TOKEN} WHERE user_name = $1 ORDER BY created, id"
        return [_token(row) for row in await self._fetch("listing tokens", sql, user)]

    async def revoke_token(self, token_id: str) -> bool:
        sql = "DELETE FROM freight_user_tokens WHERE id = $1 RETURNING 1"
        return await self._count("revoking a token", sql, token_id) > 0

    async def revoke_tokens(self, user: str) -> int:
        sql = "DELETE FROM freight_user_tokens WHERE user_name = $1 RETURNING 1"
        return await self._count("revoking tokens", sql, user)

    async def usage(self, owner: str, now: float) -> Usage:
        rows = await self._fetch("totalling a user's uploads", _USAGE, owner, now)
        return Usage(bytes=int(rows[0]["bytes"]), files=int(rows[0]["files"]))

    async def link_key(self) -> bytes:
        await self._fetch(
            "making the link key",
            "INSERT INTO freight_server_keys (name, value) VALUES ('links', $1)"
            " ON CONFLICT (name) DO NOTHING",
            secrets.token_bytes(32),
        )
        rows = await self._fetch(
            "reading the link key", "SELECT value FROM freight_server_keys WHERE name = 'links'"
        )
        return bytes(rows[0]["value"])

    @contextlib.asynccontextmanager
    async def admitting(self, owner: str) -> AsyncIterator[None]:
        # A transaction-scoped lock: it ends with the transaction, and with the connection
        # if this node dies, so a crashed node never holds a user's creations up.
        async with contextlib.AsyncExitStack() as stack:
            with translate("waiting for the user's other creations"):
                connection = await stack.enter_async_context(
                    self._pool.acquire(timeout=self._acquire_timeout)
                )
                await stack.enter_async_context(connection.transaction())
                await connection.execute(
                    "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                    "freight-quota:" + owner,
                )
            yield

    async def close(self) -> None:
        with translate("closing the user database"):
            await self._pool.close()


async def open_pg_users(dsn: str, settings: PoolSettings | None = None) -> PgUsers:
    """Connect to ``dsn``, create or migrate the session and user tables (usage reads the
    sessions'), and return the repository; closing it closes the pool."""
    settings = settings or PoolSettings(min_size=1, max_size=4)
    pool = await create_pool(dsn, settings)
    try:
        with translate("preparing the user database"):
            async with pool.acquire(timeout=settings.acquire_timeout) as connection:
                await ensure_schema(connection)
                await ensure_schema(connection, COMPONENT, _MIGRATIONS)
    except BaseException:
        await pool.close()
        raise
    return PgUsers(pool, acquire_timeout=settings.acquire_timeout)
