"""Which user store a server uses: the one beside its session records.

The local and memory stores keep users in their SQLite file (:mod:`.local_users`); a
fleet keeps them in its PostgreSQL database (:mod:`.pg_users`), so every node sees the
same users and tokens.
"""

from __future__ import annotations

from freight.config import ServerConfig
from freight.core.ports import SessionRepository
from freight.core.users import UserRepository

__all__ = ["open_users"]


async def open_users(config: ServerConfig, sessions: SessionRepository) -> UserRepository | None:
    """The user store beside ``sessions``; None for a session store that has none."""
    if config.db is None:
        # Imported here: a fleet node never loads sqlite3 (its memory is counted).
        from freight.storage.local_sessions import SqliteSessions
        from freight.storage.local_users import SqliteUsers

        return SqliteUsers(sessions.path) if isinstance(sessions, SqliteSessions) else None
    from freight.storage.pg_users import open_pg_users  # needs the "scale" extra

    return await open_pg_users(config.db)
