"""Connections to the shared PostgreSQL database, and what its failures mean to freight.

One bounded pool per node. Every statement has a time limit twice over: the server's
``statement_timeout`` ends a statement stuck on a lock, the client's ``command_timeout``
one whose answer never comes (a cut-off network). The server side of each connection gets
TCP keepalives and ``tcp_user_timeout`` so a node that vanishes without closing its sockets
is noticed within seconds, and what it held (row locks, advisory locks) is freed.

:func:`translate` turns the driver's exceptions into freight's: losing the database is
:class:`~freight.errors.StorageUnavailable` (503, retry), its disk filling up is
:class:`~freight.errors.InsufficientStorage`, anything else a plain
:class:`~freight.errors.FreightError`. No raw ``asyncpg`` exception leaves this package.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import asyncpg

from freight.errors import FreightError, InsufficientStorage, StorageUnavailable

__all__ = ["PoolSettings", "create_pool", "server_settings", "translate"]

# Connection loss, a server shutting down or refusing connections, timeouts, and
# transactions the server rolled back on its own: all worth a retry a moment later.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.TransactionRollbackError,
)


@dataclass(frozen=True)
class PoolSettings:
    """How one node talks to the database. Times in seconds."""

    min_size: int = 1
    max_size: int = 10
    connect_timeout: float = 10.0
    statement_timeout: float = 15.0
    # How long a request waits for a free connection before the database counts as busy.
    acquire_timeout: float = 15.0
    idle_lifetime: float = 300.0
    keepalive_idle: int = 10
    keepalive_interval: int = 2
    keepalive_count: int = 3
    application_name: str = "freight"


def server_settings(settings: PoolSettings) -> dict[str, str]:
    """What each connection sets on the server's side when it opens."""
    return {
        "application_name": settings.application_name,
        "statement_timeout": str(int(settings.statement_timeout * 1000)),
        "idle_in_transaction_session_timeout": str(int(settings.statement_timeout * 2000)),
        "tcp_keepalives_idle": str(settings.keepalive_idle),
        "tcp_keepalives_interval": str(settings.keepalive_interval),
        "tcp_keepalives_count": str(settings.keepalive_count),
        "tcp_user_timeout": str(
            1000
            * (settings.keepalive_idle + settings.keepalive_interval * settings.keepalive_count)
        ),
    }


async def create_pool(
    dsn: str,
    settings: PoolSettings,
    connection_class: type[asyncpg.Connection] = asyncpg.Connection,
) -> asyncpg.Pool:
    with translate("cannot connect to the session database"):
        pool = await asyncpg.create_pool(
            dsn,
            connection_class=connection_class,
            min_size=settings.min_size,
            max_size=settings.max_size,
            timeout=settings.connect_timeout,
            # A little more than the server's limit: the server's own error comes first.
            command_timeout=settings.statement_timeout + 5,
            max_inactive_connection_lifetime=settings.idle_lifetime,
            server_settings=server_settings(settings),
        )
    return pool


@contextlib.contextmanager
def translate(what: str) -> Iterator[None]:
    """Raise freight's error for a driver failure; ``what`` says what was being done."""
    try:
        yield
    except FreightError:
        raise
    except asyncio.CancelledError:
        raise
    except asyncpg.exceptions.DiskFullError as exc:
        raise InsufficientStorage("the session database's disk is full") from exc
    except _UNAVAILABLE as exc:
        raise StorageUnavailable(
            f"{what}: the session database is unavailable ({_brief(exc)})"
        ) from exc
    except asyncpg.PostgresError as exc:
        raise FreightError(f"{what}: session database failure ({_brief(exc)})") from exc


def _brief(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:200] if text else type(exc).__name__
