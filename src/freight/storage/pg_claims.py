"""Byte-range claims shared by every node of a fleet: :class:`ClaimRegistry` in PostgreSQL.

Design
------
* **Liveness is a session advisory lock.** Each node holds ``pg_advisory_lock(node_key)``
  (a random 62-bit key, new at every connection) on its dedicated connection
  (:mod:`freight.storage.pg_link`: keepalives, ``tcp_user_timeout``, a heartbeat). A claim
  is a row of ``freight_claims`` (upload, ``[start, end)``, ``node_key``) that counts only
  while its node's lock is granted in ``pg_locks``: a node that dies or is cut off loses
  its lock when the server ends its session (15 ms after a kill, a few seconds after a
  cut), and with it every claim, with no heartbeat table or expiry to tune. Rows of dead
  nodes are swept by the next claim on the same upload.
* **Claiming** is one transaction under ``pg_advisory_xact_lock(class, hashtext(upload))``
  so the claims of one upload take turns across nodes: dead rows go, an overlapping live
  row refuses the claim (:class:`~freight.errors.UploadLocked`), else the row goes in.
* **Fencing.** :meth:`PgSessions.record_received` with a :class:`PgClaim` takes the same
  upload lock *shared* and merges the range only if the claim's row is still there and its
  node's lock still granted (:data:`FENCE`), in the same statement; else UploadLocked. A
  claim that takes over waits for the exclusive lock, so a record and a take-over never
  interleave: once another node holds the bytes, the old holder records nothing.
* **Take-over.** The newer request finds the live overlapping claims (none without an
  interrupt, as in-process), interrupts this node's directly and asks other nodes with a
  ``NOTIFY`` on the holder node's channel; that node calls the claim's
  ``interrupt(rewrites)``, and its ``release`` notifies the asker's channel. The asker
  re-reads which claims are still live when told (and every :data:`RECHECK` seconds,
  because a holder that dies meanwhile tells no one), at most :data:`TAKE_OVER_WAIT`.
* **Losing the link.** A node whose dedicated connection drops or stops answering can no
  longer prove its claims: it interrupts all of them at once, then connects again under a
  new key (claims made meanwhile are refused with StorageUnavailable).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from freight.core.claims import TAKE_OVER_WAIT
from freight.core.ports import ClaimRegistry, HeldClaim
from freight.errors import FreightError, StorageUnavailable, UploadLocked
from freight.storage.pg_link import Link, LinkSettings
from freight.storage.pg_pool import PoolSettings, create_pool, translate
from freight.storage.pg_schema import ensure_schema

__all__ = ["FENCE", "RECHECK", "UPLOAD_LOCK", "PgClaim", "PgClaims", "open_pg_claims"]

log = logging.getLogger("freight.storage.pg_claims")

# Seconds between re-reads while waiting for a holder to let go (a dead one says nothing).
RECHECK = 0.5
# The class of the (int4, int4) advisory locks that serialise one upload's claims; node keys
# use the single-bigint form, a separate key space (pg_locks.objsubid 1, not 2).
UPLOAD_CLASS = 0x66726774
UPLOAD_LOCK = "pg_advisory_xact_lock({class_}, hashtext({upload}))"
_MAX_END = (1 << 63) - 1

_MIGRATIONS = (
    (
        """
        CREATE TABLE freight_claims (
            claim_id bigserial PRIMARY KEY,
            upload_id text NOT NULL,
            start_at bigint NOT NULL,
            end_at bigint NOT NULL,
            node_key bigint NOT NULL,
            node text NOT NULL,
            interruptible boolean NOT NULL
        )
        """,
        "CREATE INDEX freight_claims_upload ON freight_claims (upload_id, start_at)",
        "CREATE INDEX freight_claims_node ON freight_claims (node_key)",
    ),
)
# The keys of the node locks granted now, in this database.
_LIVE_NODES = (
    "(SELECT (l.classid::int8 << 32) | l.objid::int8 FROM pg_locks l"
    " WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted"
    " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()))"
)
_LIVE = f"c.node_key IN {_LIVE_NODES}"
_OVERLAPPING = "c.upload_id = $1 AND c.start_at < $3 AND $2 < c.end_at"
_CLAIM = f"""
WITH dead AS (
    DELETE FROM freight_claims c WHERE c.upload_id = $1 AND NOT {_LIVE}
), blocking AS (
    SELECT 1 FROM freight_claims c WHERE {_OVERLAPPING} AND {_LIVE}
)
INSERT INTO freight_claims (upload_id, start_at, end_at, node_key, node, interruptible)
SELECT $1, $2, $3, $4, $5, $6 WHERE NOT EXISTS (SELECT 1 FROM blocking)
RETURNING claim_id
"""
FENCE = (
    "EXISTS (SELECT 1 FROM freight_claims c WHERE c.claim_id = {claim} AND c.node_key = {node}"
    f" AND c.upload_id = {{upload}} AND {_LIVE})"
)
"""SQL true while the claim (its id and node key as parameters) still counts."""


@dataclass(eq=False)
class PgClaim:
    """A claim as its holder sees it; ``claim_id`` and ``node_key`` are what a fence checks."""

    upload_id: str
    start: int
    end: int
    claim_id: int
    node_key: int
    interrupt: Callable[[int | None], None] | None = None
    released: asyncio.Event = field(default_factory=asyncio.Event)
    # Channels of nodes waiting for this claim to go (they asked it to).
    waiters: set[str] = field(default_factory=set)


def _channel(node_key: int) -> str:
    return f"freight_node_{node_key}"


class PgClaims:
    """The claims of one node; :func:`open_pg_claims` makes one."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        dsn: str,
        node: str,
        link_settings: LinkSettings,
        *,
        take_over_wait: float = TAKE_OVER_WAIT,
    ) -> None:
        self._pool = pool
        self.node = node
        self._take_over_wait = take_over_wait
        self._claims: dict[int, PgClaim] = {}
        self._per_upload: dict[str, int] = {}  # claims held here, for held_here
        self._node_key: int | None = None
        self._unreleased: set[int] = set()  # rows a failed release left behind
        self._pokes: set[asyncio.Event] = set()  # take-overs waiting for a release
        self._tasks: set[asyncio.Task[None]] = set()
        self._link = Link(
            dsn, link_settings, on_up=self._on_up, on_down=self._on_down, beat=self._beat
        )

    @property
    def node_key(self) -> int | None:
        """This node's current lock key (None while its link is down)."""
        return self._node_key

    async def _on_up(self, connection: asyncpg.Connection) -> None:
        while True:
            key = secrets.randbits(62) | 1
            if await connection.fetchval("SELECT pg_try_advisory_lock($1)", key):
                break
        # Rows of an earlier node that had the same key are not ours to keep.
        await connection.execute("DELETE FROM freight_claims WHERE node_key = $1", key)
        await connection.add_listener(_channel(key), self._on_notify)
        self._node_key = key

    def _on_down(self) -> None:
        self._node_key = None
        log.warning(
            "claims link lost: interrupting this node's %d claims (they no longer count)",
            len(self._claims),
        )
        for claim in list(self._claims.values()):
            _interrupt(claim, None)

    async def _beat(self, connection: asyncpg.Connection) -> None:
        if self._unreleased:
            ids = list(self._unreleased)
            await connection.execute(
                "DELETE FROM freight_claims WHERE claim_id = ANY($1::bigint[])", ids
            )
            self._unreleased.difference_update(ids)
        else:
            await connection.execute("SELECT 1")

    async def claim(
        self,
        upload_id: str,
        start: int,
        end: int,
        interrupt: Callable[[int | None], None] | None = None,
    ) -> PgClaim:
        node_key = self._node_key
        if node_key is None:
            raise StorageUnavailable("this node's claims link to the database is down")
        with translate("claiming bytes"):
            async with self._pool.acquire() as connection, connection.transaction():
                await connection.execute(
                    "SELECT " + UPLOAD_LOCK.format(class_=UPLOAD_CLASS, upload="$1"), upload_id
                )
                claim_id = await connection.fetchval(
                    _CLAIM, upload_id, start, min(end, _MAX_END), node_key, self.node,
                    interrupt is not None,
                )  # fmt: skip
        if claim_id is None:
            raise UploadLocked("another request is writing this upload right now")
        claim = PgClaim(upload_id, start, end, int(claim_id), node_key, interrupt)
        self._claims[claim.claim_id] = claim
        self._per_upload[upload_id] = self._per_upload.get(upload_id, 0) + 1
        return claim

    async def release(self, claim: HeldClaim) -> None:
        assert isinstance(claim, PgClaim)
        if self._claims.pop(claim.claim_id, None) is not None:
            left = self._per_upload.pop(claim.upload_id) - 1
            if left:
                self._per_upload[claim.upload_id] = left
        try:
            with translate("releasing a claim"):
                await self._pool.execute(
                    "WITH gone AS (DELETE FROM freight_claims WHERE claim_id = $1)"
                    " SELECT pg_notify(ch, $2) FROM unnest($3::text[]) AS ch",
                    claim.claim_id,
                    json.dumps({"released": claim.claim_id}),
                    sorted(claim.waiters),
                )
        except FreightError:
            self._unreleased.add(claim.claim_id)  # the heartbeat deletes it later
            raise
        finally:
            claim.released.set()
            self._poke()

    async def held(self, upload_id: str) -> bool:
        with translate("checking claims"):
            return bool(
                await self._pool.fetchval(
                    "SELECT EXISTS (SELECT 1 FROM freight_claims c"
                    f" WHERE c.upload_id = $1 AND {_LIVE})",
                    upload_id,
                )
            )

    def held_here(self, upload_id: str) -> bool:
        return upload_id in self._per_upload

    async def take_over(self, upload_id: str, start: int, end: int, rewrites: int | None) -> bool:
        rows = await self._live_overlapping(upload_id, start, end)
        if not rows or not all(row["interruptible"] for row in rows):
            return False  # nothing to take, or held by work that cannot be interrupted
        log.info("upload %s: a new request takes over from a running one", upload_id)
        poke = asyncio.Event()
        self._pokes.add(poke)
        try:
            await self._ask(rows, rewrites)
            deadline = time.monotonic() + self._take_over_wait
            ids = [int(row["claim_id"]) for row in rows]
            while True:
                # Cleared before the look, not after: a release that pokes while the query
                # runs must not be lost (it cost a whole RECHECK).
                poke.clear()
                if not await self._still_live(ids):
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(left, RECHECK)):
                        await poke.wait()
        finally:
            self._pokes.discard(poke)
        return True

    async def _live_overlapping(self, upload_id: str, start: int, end: int) -> list[Any]:
        with translate("finding claims to take over"):
            return list(
                await self._pool.fetch(
                    "SELECT claim_id, node_key, interruptible FROM freight_claims c"
                    f" WHERE {_OVERLAPPING} AND {_LIVE}",
                    upload_id,
                    start,
                    min(end, _MAX_END),
                )
            )

    async def _ask(self, rows: list[Any], rewrites: int | None) -> None:
        """Interrupt this node's claims among ``rows``; ask other nodes to interrupt theirs."""
        me = self._node_key
        channels: list[str] = []
        payloads: list[str] = []
        for row in rows:
            claim_id, node_key = int(row["claim_id"]), int(row["node_key"])
            local = self._claims.get(claim_id)
            if local is not None and node_key == local.node_key:
                _interrupt(local, rewrites)
            elif node_key != me and me is not None:
                channels.append(_channel(node_key))
                message = {"interrupt": claim_id, "rewrites": rewrites, "reply": _channel(me)}
                payloads.append(json.dumps(message))
        if channels:
            with translate("asking another node to let go"):
                await self._pool.execute(
                    "SELECT pg_notify(ch, p) FROM unnest($1::text[], $2::text[]) AS t(ch, p)",
                    channels,
                    payloads,
                )

    async def _still_live(self, ids: list[int]) -> bool:
        with translate("waiting for claims to go"):
            return bool(
                await self._pool.fetchval(
                    "SELECT EXISTS (SELECT 1 FROM freight_claims c"
                    f" WHERE c.claim_id = ANY($1::bigint[]) AND {_LIVE})",
                    ids,
                )
            )

    async def interrupt_all(self) -> None:
        claims = list(self._claims.values())
        for claim in claims:
            _interrupt(claim, None)
        waits = [asyncio.ensure_future(claim.released.wait()) for claim in claims]
        if not waits:
            return
        _, pending = await asyncio.wait(waits, timeout=self._take_over_wait)
        for wait in pending:
            wait.cancel()

    def _poke(self) -> None:
        for poke in self._pokes:
            poke.set()

    def _on_notify(self, connection: Any, pid: int, channel: str, payload: object) -> None:
        try:
            message = json.loads(str(payload))
            if "released" in message:
                self._poke()
                return
            claim_id = int(message["interrupt"])
            rewrites = message.get("rewrites")
            reply = str(message["reply"])
        except (ValueError, KeyError, TypeError):
            log.warning("claims: ignoring a malformed notification")
            return
        claim = self._claims.get(claim_id)
        if claim is None:  # gone already: say so, the asker may have missed it
            self._spawn(self._tell_released(reply, claim_id))
            return
        claim.waiters.add(reply)
        _interrupt(claim, rewrites if isinstance(rewrites, int) else None)

    async def _tell_released(self, channel: str, claim_id: int) -> None:
        with contextlib.suppress(FreightError), translate("answering a take-over"):
            await self._pool.execute(
                "SELECT pg_notify($1, $2)", channel, json.dumps({"released": claim_id})
            )

    def _spawn(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        try:
            ids = list(self._claims) + list(self._unreleased)
            if ids:
                with contextlib.suppress(FreightError), translate("closing claims"):
                    await self._pool.execute(
                        "DELETE FROM freight_claims WHERE claim_id = ANY($1::bigint[])", ids
                    )
            for task in list(self._tasks):
                task.cancel()
        finally:
            await self._link.close()
            await self._pool.close()


def _interrupt(claim: PgClaim, rewrites: int | None) -> None:
    if claim.interrupt is not None:
        claim.interrupt(rewrites)


async def open_pg_claims(
    dsn: str,
    node: str,
    settings: PoolSettings | None = None,
    link_settings: LinkSettings | None = None,
    *,
    take_over_wait: float = TAKE_OVER_WAIT,
) -> PgClaims:
    """This node's claims on ``dsn``: creates the table if needed, takes the node lock."""
    settings = settings or PoolSettings()
    link_settings = link_settings or LinkSettings(application_name=f"freight-claims-{node}")
    pool = await create_pool(dsn, settings)
    try:
        with translate("preparing the claims table"):
            async with pool.acquire(timeout=settings.acquire_timeout) as connection:
                await ensure_schema(connection, "claims", _MIGRATIONS)
        claims = PgClaims(pool, dsn, node, link_settings, take_over_wait=take_over_wait)
        await claims._link.start()
    except BaseException:
        await pool.close()
        raise
    return claims


_: type[ClaimRegistry] = PgClaims
