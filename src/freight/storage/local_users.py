"""Users and tokens in SQLite: the local backend's :class:`~freight.core.users.UserRepository`.

Layout: three tables in the same ``freight.db`` as the sessions (:mod:`.local_db`), through
a connection of their own (WAL lets it read while the sessions write)::

    users         name, admin, byte_quota, file_quota, created
    user_tokens   id, user_name, digest (SHA-256 of the secret), created, expires, read_only
    server_keys   name, value: random keys made once (the download-link key)

Nothing is cached: each lookup reads the table, so a token revoked by ``freight user``
(another process) is refused by the server's next request. A usage total is one indexed
aggregate over the ``uploads`` table (its ``owner`` column).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

from freight.core.users import TokenRecord, Usage, User
from freight.errors import FreightError, UserExists
from freight.storage.local_db import immediate_transaction

__all__ = ["SqliteUsers"]

_T = TypeVar("_T")
_BUSY_TIMEOUT = 30.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    admin INTEGER NOT NULL DEFAULT 0,
    byte_quota INTEGER,
    file_quota INTEGER,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS user_tokens (
    id TEXT PRIMARY KEY,
    user_name TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    digest BLOB NOT NULL,
    created REAL NOT NULL,
    expires REAL,
    read_only INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS user_tokens_user ON user_tokens (user_name);
CREATE TABLE IF NOT EXISTS server_keys (
    name TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
"""
_USER = "SELECT name, admin, byte_quota, file_quota, created FROM users"
_TOKEN = "SELECT id, user_name, digest, created, expires, read_only FROM user_tokens"
# An owner's uploads that take room: finished files, and unfinished ones not yet expired;
# a concatenation part used by a final one counts through the final.
USAGE_SQL = (
    "SELECT COUNT(*), COALESCE(SUM(COALESCE(length, 0)), 0) FROM uploads WHERE owner = ?"
    " AND used_by IS NULL AND (state = 'finished' OR expires IS NULL OR expires >= ?)"
)


def _user(row: tuple[Any, ...]) -> User:
    return User(
        name=row[0], admin=bool(row[1]), byte_quota=row[2], file_quota=row[3], created=row[4]
    )


def _token(row: tuple[Any, ...]) -> TokenRecord:
    return TokenRecord(
        id=row[0],
        user=row[1],
        digest=bytes(row[2]),
        created=row[3],
        expires=row[4],
        read_only=bool(row[5]),
    )


class SqliteUsers:
    """Users in the SQLite database at ``path`` (created if absent)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            path, timeout=_BUSY_TIMEOUT, check_same_thread=False, isolation_level=None
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)

    def _tx(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return immediate_transaction(self._db, self._lock)

    def _write(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        try:
            with self._tx() as db:
                return work(db)
        except sqlite3.IntegrityError:
            raise
        except sqlite3.Error as exc:
            raise FreightError(f"user store failure: {exc}") from exc

    def _query(self, sql: str, parameters: tuple[Any, ...] = ()) -> list[Any]:
        with self._lock:
            try:
                return self._db.execute(sql, parameters).fetchall()
            except sqlite3.Error as exc:
                raise FreightError(f"user store failure: {exc}") from exc

    async def _run(self, work: Callable[..., _T], *args: Any) -> _T:
        return await asyncio.to_thread(work, *args)

    # users -------------------------------------------------------------------------------

    def _add_user(self, user: User) -> None:
        try:
            self._write(
                lambda db: db.execute(
                    "INSERT INTO users (name, admin, byte_quota, file_quota, created)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (user.name, int(user.admin), user.byte_quota, user.file_quota, user.created),
                )
            )
        except sqlite3.IntegrityError as exc:
            raise UserExists(f"a user named {user.name!r} already exists") from exc

    async def add_user(self, user: User) -> None:
        await self._run(self._add_user, user)

    async def get_user(self, name: str) -> User | None:
        rows = await self._run(self._query, f"{_USER} WHERE name = ?", (name,))
        return _user(rows[0]) if rows else None

    async def list_users(self) -> list[User]:
        return [_user(row) for row in await self._run(self._query, f"{_USER} ORDER BY name")]

    async def set_quota(self, name: str, byte_quota: int | None, file_quota: int | None) -> bool:
        def change(db: sqlite3.Connection) -> bool:
            sql = "UPDATE users SET byte_quota = ?, file_quota = ? WHERE name = ?"
            return db.execute(sql, (byte_quota, file_quota, name)).rowcount > 0

        return await self._run(self._write, change)

    async def remove_user(self, name: str) -> bool:
        def remove(db: sqlite3.Connection) -> bool:
            db.execute("DELETE FROM user_tokens WHERE user_name = ?", (name,))
            return db.execute("DELETE FROM users WHERE name = ?", (name,)).rowcount > 0

        return await self._run(self._write, remove)

    async def has_users(self) -> bool:
        return bool(await self._run(self._query, "SELECT 1 FROM users LIMIT 1"))

    # tokens ------------------------------------------------------------------------------

    async def add_token(self, record: TokenRecord) -> None:
        values = (
            record.id,
            record.user,
            record.digest,
            record.created,
            record.expires,
            int(record.read_only),
        )

        def add(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO user_tokens (id, user_name, digest, created, expires, read_only)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                values,
            )

        try:
            await self._run(self._write, add)
        except sqlite3.IntegrityError as exc:
            raise FreightError(f"no user named {record.user!r}") from exc

    async def find_token(self, token_id: str) -> TokenRecord | None:
        rows = await self._run(self._query, f"{_TOKEN} WHERE id = ?", (token_id,))
        return _token(rows[0]) if rows else None

    async def list_tokens(self, user: str) -> list[TokenRecord]:
        sql = f"{_TOKEN} WHERE user_name = ? ORDER BY created, id"
        return [_token(row) for row in await self._run(self._query, sql, (user,))]

    async def revoke_token(self, token_id: str) -> bool:
        def revoke(db: sqlite3.Connection) -> bool:
            return db.execute("DELETE FROM user_tokens WHERE id = ?", (token_id,)).rowcount > 0

        return await self._run(self._write, revoke)

    async def revoke_tokens(self, user: str) -> int:
        def revoke(db: sqlite3.Connection) -> int:
            return db.execute("DELETE FROM user_tokens WHERE user_name = ?", (user,)).rowcount

        return await self._run(self._write, revoke)

    # usage and keys ----------------------------------------------------------------------

    def _usage(self, owner: str, now: float) -> Usage:
        with self._lock:
            try:
                count, total = self._db.execute(USAGE_SQL, (owner, now)).fetchone()
            except sqlite3.OperationalError as exc:
                if "no such table" in str(exc):  # no upload was ever stored here
                    return Usage(bytes=0, files=0)
                raise FreightError(f"user store failure: {exc}") from exc
        return Usage(bytes=int(total), files=int(count))

    async def usage(self, owner: str, now: float) -> Usage:
        return await self._run(self._usage, owner, now)

    @contextlib.asynccontextmanager
    async def admitting(self, owner: str) -> AsyncIterator[None]:
        # One process serves a data directory (its lock file says so), and the gate
        # already serialises one owner's creations within a process.
        yield

    def _link_key(self) -> bytes:
        def make(db: sqlite3.Connection) -> bytes:
            db.execute(
                "INSERT OR IGNORE INTO server_keys (name, value) VALUES ('links', ?)",
                (secrets.token_bytes(32),),
            )
            row = db.execute("SELECT value FROM server_keys WHERE name = 'links'").fetchone()
            return bytes(row[0])

        return self._write(make)

    async def link_key(self) -> bytes:
        return await self._run(self._link_key)

    async def close(self) -> None:
        def close() -> None:
            with self._lock:
                self._db.close()

        await self._run(close)
