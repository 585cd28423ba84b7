"""A node's dedicated connection to PostgreSQL: what its session advisory locks and
``LISTEN`` ride on, kept up by a supervisor task.

Not a pooled connection: asyncpg's pool runs ``pg_advisory_unlock_all()`` and ``UNLISTEN *``
when a connection goes back, so a session lock or a listener on a pooled connection would
vanish behind its holder's back. A lock held here lasts as long as this connection does:

* the server's side gets TCP keepalives and ``tcp_user_timeout`` (seconds, not the
  kernel's two hours), so when this node dies or is cut off the server ends the session
  and frees its locks within :attr:`LinkSettings.server_gives_up` seconds;
* this side runs a heartbeat (a statement with a short time limit every
  :attr:`LinkSettings.heartbeat` seconds), so a node cut off from the database learns it
  within about ``heartbeat + heartbeat_timeout`` seconds, before the server gives its
  locks to others, and ``on_down`` runs at once (a dropped connection runs it at once too);
* after a loss it connects again (every ``reconnect_delay`` seconds) and runs ``on_up``
  on the new connection: what the old one held is gone for good, a new session starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

from freight.errors import StorageUnavailable
from freight.storage.pg_pool import translate

__all__ = ["Link", "LinkSettings"]

log = logging.getLogger("freight.storage.pg_link")


@dataclass(frozen=True)
class LinkSettings:
    """How a dedicated connection notices it is gone. Times in seconds."""

    connect_timeout: float = 5.0
    heartbeat: float = 1.0
    heartbeat_timeout: float = 2.0
    reconnect_delay: float = 1.0
    keepalive_idle: int = 2
    keepalive_interval: int = 1
    keepalive_count: int = 3
    application_name: str = "freight"

    @property
    def server_gives_up(self) -> float:
        """About how long the server keeps the session of a node that went silent."""
        return float(self.keepalive_idle + self.keepalive_interval * self.keepalive_count)

    def server_settings(self) -> dict[str, str]:
        return {
            "application_name": self.application_name,
            "statement_timeout": str(int(self.heartbeat_timeout * 1000)),
            "tcp_keepalives_idle": str(self.keepalive_idle),
            "tcp_keepalives_interval": str(self.keepalive_interval),
            "tcp_keepalives_count": str(self.keepalive_count),
            "tcp_user_timeout": str(int(self.server_gives_up * 1000)),
        }


OnUp = Callable[[asyncpg.Connection], Awaitable[None]]
Beat = Callable[[asyncpg.Connection], Awaitable[Any]]


class Link:
    """One dedicated connection, reconnected when lost; :meth:`start` connects it first."""

    def __init__(
        self,
        dsn: str,
        settings: LinkSettings,
        *,
        on_up: OnUp,
        on_down: Callable[[], None],
        beat: Beat | None = None,
    ) -> None:
        self._dsn = dsn
        self.settings = settings
        self._on_up = on_up
        self._on_down = on_down
        self._beat = beat
        self._connection: asyncpg.Connection | None = None
        self._lock = asyncio.Lock()  # one statement at a time on one connection
        self._lost = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def up(self) -> bool:
        return self._connection is not None and not self._connection.is_closed()

    async def start(self) -> None:
        """Connect and run ``on_up`` once (raising what fails), then supervise."""
        connection = await self._connect()
        self._task = asyncio.create_task(self._supervise(connection))

    @contextlib.asynccontextmanager
    async def using(self, what: str) -> AsyncIterator[asyncpg.Connection]:
        """The connection, to this caller alone for a moment; StorageUnavailable if down."""
        with translate(what):
            async with self._lock:
                connection = self._connection
                if connection is None or connection.is_closed():
                    raise StorageUnavailable(f"{what}: this node's database link is down")
                yield connection

    async def _connect(self) -> asyncpg.Connection:
        with translate("opening a dedicated database connection"):
            connection = await asyncpg.connect(
                self._dsn,
                timeout=self.settings.connect_timeout,
                server_settings=self.settings.server_settings(),
            )
            try:
                await self._on_up(connection)
            except BaseException:
                connection.terminate()
                raise
        self._lost = asyncio.Event()
        connection.add_termination_listener(self._terminated)
        self._connection = connection
        return connection

    def _terminated(self, connection: Any) -> None:
        if connection is self._connection:
            self._down()

    def _down(self) -> None:
        if self._connection is None:
            return
        connection, self._connection = self._connection, None
        self._lost.set()
        connection.terminate()
        if not self._closing:
            self._on_down()

    async def _supervise(self, connection: asyncpg.Connection | None) -> None:
        while not self._closing:
            if connection is None:
                try:
                    connection = await self._connect()
                except Exception as exc:  # any failure: try again later
                    log.warning("database link: cannot reconnect (%s)", exc)
                    await asyncio.sleep(self.settings.reconnect_delay)
                    continue
                log.info("database link: connected again")
            await self._watch()
            connection = None
            if not self._closing:
                await asyncio.sleep(self.settings.reconnect_delay)

    async def _watch(self) -> None:
        """Until the connection is lost or stops answering."""
        settings = self.settings
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(settings.heartbeat):
                    await self._lost.wait()
            if self._lost.is_set() or self._closing:
                break
            try:
                async with asyncio.timeout(settings.heartbeat_timeout):
                    async with self.using("heartbeat") as connection:
                        if self._beat is not None:
                            await self._beat(connection)
                        else:
                            await connection.execute("SELECT 1")
            except (TimeoutError, StorageUnavailable) as exc:
                log.warning("database link lost: %s", exc or "no answer in time")
                break
            except Exception as exc:  # a failing beat is a lost link
                log.warning("database link: heartbeat failed (%s)", exc)
                break
        self._down()

    async def close(self) -> None:
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await connection.close()
            connection.terminate()
