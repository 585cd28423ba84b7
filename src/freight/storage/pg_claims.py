"""Byte-range claims shared by every node of a fleet, in PostgreSQL (a sketch: see below).

Design
------
* A claim is a row of ``freight_claims``: upload, ``[start, end)``, the node, and the
  identity (``pid``, ``backend_start``) of the node's *listener connection*, one dedicated
  connection per node outside the pool. A claim is live while that connection is: a node
  that dies (or is cut off: the server's TCP keepalives and ``tcp_user_timeout`` end its
  connection within seconds) leaves rows anyone may delete, with no heartbeat to keep.
* Claiming is one transaction: ``pg_advisory_xact_lock`` on the upload serialises the
  claims of one upload across nodes, stale rows of dead nodes are deleted, an overlapping
  live row refuses the claim (:class:`~freight.errors.UploadLocked`), else the row goes in.
  Transaction-scoped locks only: asyncpg's pool calls ``pg_advisory_unlock_all()`` when a
  connection goes back, so a session-level lock taken on a pooled connection would vanish.
* Take-over: the newer request finds the live overlapping claims; a claim of this node is
  interrupted directly, another node's through ``NOTIFY freight_claims`` (delivered at
  commit, about 0.2 ms) which its listener turns into the claim's ``interrupt(rewrites)``.
  It then waits (at most ``take_over_wait``) until those rows are gone.
* A node whose listener connection drops interrupts its own claims at once: from then on
  other nodes see them as stale and may write the same bytes.

What is missing before the engine can use it: the port's ``claim``, ``release`` and
``held`` are synchronous (made for an in-process registry); here they are coroutines, since
refusing an overlap held by another node needs the database. The port should become async
(or the engine claim through an async wrapper). Waiting for a release polls every 20 ms; a
``NOTIFY`` on release would wake the waiter at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from freight.errors import FreightError, UploadLocked
from freight.storage.pg_pool import PoolSettings, create_pool, server_settings, translate
from freight.storage.pg_schema import ensure_schema

__all__ = ["PgClaim", "PgClaims", "open_pg_claims"]

log = logging.getLogger("freight.storage.pg_claims")

CHANNEL = "freight_claims"
_MIGRATIONS = (
    (
        """
        CREATE TABLE freight_claims (
            claim_id bigserial PRIMARY KEY,
            upload_id text NOT NULL,
            start_at bigint NOT NULL,
            end_at bigint NOT NULL,
            node text NOT NULL,
            holder_pid integer NOT NULL,
            holder_started timestamptz NOT NULL
        )
        """,
        "CREATE INDEX freight_claims_upload ON freight_claims (upload_id, start_at)",
    ),
)
_LIVE = (
    "EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = c.holder_pid"
    " AND a.backend_start = c.holder_started)"
)
_OVERLAPPING = "c.upload_id = $1 AND c.start_at < $3 AND $2 < c.end_at"


@dataclass(eq=False)
class PgClaim:
    upload_id: str
    start: int
    end: int
    claim_id: int
    interrupt: Callable[[int | None], None] | None = None
    released: asyncio.Event = field(default_factory=asyncio.Event)


class PgClaims:
    """Claims of one node; :func:`open_pg_claims` makes one."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        listener: asyncpg.Connection,
        node: str,
        *,
        take_over_wait: float = 5.0,
    ) -> None:
        self._pool = pool
        self._listener = listener
        self.node = node
        self._take_over_wait = take_over_wait
        self._claims: dict[int, PgClaim] = {}
        self._identity: tuple[int, datetime] | None = None

    async def _start(self) -> None:
        row = await self._listener.fetchrow(
            "SELECT pid, backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()"
        )
        assert row is not None
        self._identity = (row["pid"], row["backend_start"])
        await self._listener.add_listener(CHANNEL, self._on_notify)
        self._listener.add_termination_listener(self._on_lost)

    async def claim(
        self,
        upload_id: str,
        start: int,
        end: int,
        interrupt: Callable[[int | None], None] | None = None,
    ) -> PgClaim:
        if self._identity is None or self._listener.is_closed():
            raise FreightError("this node's claims connection is gone")
        pid, started = self._identity
        with translate("claiming bytes"):
            async with self._pool.acquire() as connection, connection.transaction():
                await connection.execute(
                    "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", upload_id
                )
                await connection.execute(
                    f"DELETE FROM freight_claims c WHERE c.upload_id = $1 AND NOT {_LIVE}",
                    upload_id,
                )
                blocked = await connection.fetchval(
                    f"SELECT EXISTS (SELECT 1 FROM freight_claims c WHERE {_OVERLAPPING})",
                    upload_id,
                    start,
                    end,
                )
                if blocked:
                    raise UploadLocked("another request is writing these bytes")
                claim_id = await connection.fetchval(
                    "INSERT INTO freight_claims (upload_id, start_at, end_at, node,"
                    " holder_pid, holder_started) VALUES ($1, $2, $3, $4, $5, $6)"
                    " RETURNING claim_id",
                    upload_id, start, end, self.node, pid, started,
                )  # fmt: skip
        claim = PgClaim(upload_id, start, end, int(claim_id), interrupt)
        self._claims[claim.claim_id] = claim
        return claim

    async def release(self, claim: PgClaim) -> None:
        try:
            with translate("releasing a claim"):
                await self._pool.execute(
                    "DELETE FROM freight_claims WHERE claim_id = $1", claim.claim_id
                )
        finally:
            self._claims.pop(claim.claim_id, None)
            claim.released.set()

    async def held(self, upload_id: str) -> bool:
        with translate("checking claims"):
            return bool(
                await self._pool.fetchval(
                    "SELECT EXISTS (SELECT 1 FROM freight_claims c"
                    f" WHERE c.upload_id = $1 AND {_LIVE})",
                    upload_id,
                )
            )

    async def take_over(self, upload_id: str, start: int, end: int, rewrites: int | None) -> bool:
        with translate("taking an upload over"):
            rows = await self._pool.fetch(
                f"SELECT claim_id FROM freight_claims c WHERE {_OVERLAPPING} AND {_LIVE}",
                upload_id,
                start,
                end,
            )
            if not rows:
                return False
            ids = [int(row["claim_id"]) for row in rows]
            for claim_id in ids:
                local = self._claims.get(claim_id)
                if local is not None:
                    _interrupt(local, rewrites)
                else:
                    payload = json.dumps({"claim": claim_id, "rewrites": rewrites})
                    await self._pool.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)
            deadline = time.monotonic() + self._take_over_wait
            while time.monotonic() < deadline:
                left = await self._pool.fetchval(
                    "SELECT count(*) FROM freight_claims c"
                    f" WHERE c.claim_id = ANY($1::bigint[]) AND {_LIVE}",
                    ids,
                )
                if not left:
                    break
                await asyncio.sleep(0.02)
        return True

    async def interrupt_all(self) -> None:
        claims = list(self._claims.values())
        for claim in claims:
            _interrupt(claim, None)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._take_over_wait):
                for claim in claims:
                    await claim.released.wait()

    def _on_notify(self, connection: Any, pid: int, channel: str, payload: object) -> None:
        try:
            message = json.loads(str(payload))
            claim = self._claims.get(int(message["claim"]))
            rewrites = message.get("rewrites")
        except (ValueError, KeyError, TypeError):
            return
        if claim is not None:
            _interrupt(claim, rewrites if isinstance(rewrites, int) else None)

    def _on_lost(self, connection: Any) -> None:
        log.warning("claims connection lost; interrupting this node's %d claims", len(self._claims))
        for claim in list(self._claims.values()):
            _interrupt(claim, None)

    async def close(self) -> None:
        try:
            with translate("closing claims"), contextlib.suppress(FreightError):
                ids = list(self._claims)
                if ids:
                    await self._pool.execute(
                        "DELETE FROM freight_claims WHERE claim_id = ANY($1::bigint[])", ids
                    )
        finally:
            self._listener.remove_termination_listener(self._on_lost)
            await self._listener.close()
            await self._pool.close()


def _interrupt(claim: PgClaim, rewrites: int | None) -> None:
    if claim.interrupt is not None:
        claim.interrupt(rewrites)


async def open_pg_claims(
    dsn: str, node: str, settings: PoolSettings | None = None, *, take_over_wait: float = 5.0
) -> PgClaims:
    settings = settings or PoolSettings()
    pool = await create_pool(dsn, settings)
    listener: asyncpg.Connection | None = None
    try:
        with translate("preparing the claims tables"):
            async with pool.acquire(timeout=settings.acquire_timeout) as connection:
                await ensure_schema(connection, "claims", _MIGRATIONS)
            listener = await asyncpg.connect(
                dsn, timeout=settings.connect_timeout, server_settings=server_settings(settings)
            )
            claims = PgClaims(pool, listener, node, take_over_wait=take_over_wait)
            await claims._start()
    except BaseException:
        if listener is not None:
            listener.terminate()
        await pool.close()
        raise
    return claims
