"""Session records in PostgreSQL, shared by every node of a fleet.

The same rows and the same queries as the local backend's SQLite table
(:mod:`freight.storage.local_db`), so listings, totals and sweeps agree wherever they run.
Every change is one statement on one row:

* :meth:`PgSessions.record_received` merges the range into the row's own ``received`` in
  the ``UPDATE``'s ``SET`` (``freight_add_range``). Under READ COMMITTED an update that
  finds its row changed by a concurrent commit re-evaluates ``SET`` against the newest
  version, so two nodes recording ranges of one upload at once both land; a read, merge in
  Python and write back would lose one of them.
* :meth:`PgSessions.update` writes only the named columns, and with ``expect`` adds
  ``AND state = ...``: compare and set, with whether it matched and whether the row exists
  answered by the same statement.
* Both carry hook outbox entries (:mod:`freight.storage.pg_outbox`), added in the same
  transaction when the statement changed the record.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from typing import Any, Final

import asyncpg

import freight.storage.pg_outbox as pg_outbox
from freight.core.ports import (
    HeldClaim,
    ListingKind,
    OutboxEntry,
    PageKey,
    SessionField,
    UnfinishedTotals,
)
from freight.core.rangeset import RangeSet
from freight.core.session import ConcatKind, UploadSession, UploadState
from freight.errors import FreightError, UploadLocked, UploadNotFound
from freight.storage.pg_claims import FENCE, UPLOAD_CLASS, UPLOAD_LOCK, PgClaim
from freight.storage.pg_pool import PoolSettings, create_pool, translate
from freight.storage.pg_schema import ensure_schema

__all__ = ["PgSessions", "open_pg_sessions"]

_COLUMNS: Final = (
    "id",
    "length",
    "metadata",
    "received",
    "state",
    "hashed_offset",
    "hash_state",
    "created",
    "expires",
    "concat_kind",
    "concat_parts",
    "sha256",
    "finished",
    "client",
    "received_bytes",
    "used_by",
    "chunk_size",
    "declared_sha256",
    "owner",
)
_SELECT: Final = f"SELECT {', '.join(_COLUMNS)} FROM freight_uploads"
_INSERT: Final = (
    f"INSERT INTO freight_uploads ({', '.join(_COLUMNS)})"
    f" VALUES ({', '.join(f'${n}' for n in range(1, len(_COLUMNS) + 1))})"
)
_RECORD: Final = """
UPDATE freight_uploads SET
    received = freight_add_range(received, $2, $3),
    received_bytes = freight_ranges_total(freight_add_range(received, $2, $3)),
    expires = $4
WHERE id = $1
RETURNING received
"""
_FENCE_LOCK: Final = "SELECT " + UPLOAD_LOCK.replace("xact_lock", "xact_lock_shared").format(
    class_=UPLOAD_CLASS, upload="$1"
)
_RECORD_FENCED: Final = f"""
WITH changed AS (
    UPDATE freight_uploads SET
        received = freight_add_range(received, $2, $3),
        received_bytes = freight_ranges_total(freight_add_range(received, $2, $3)),
        expires = $4
    WHERE id = $1 AND {FENCE.format(claim="$5", node="$6", upload="$1")}
    RETURNING received
)
SELECT (SELECT received FROM changed) AS received,
    EXISTS (SELECT 1 FROM freight_uploads WHERE id = $1) AS present
"""
_UNFINISHED: Final = "state IN ('receiving', 'assembling') AND (expires IS NULL OR expires >= $1)"
_LISTINGS: Final[dict[ListingKind, str]] = {
    "files": "state = 'finished' AND (concat_kind IS NULL OR concat_kind != 'partial')",
    "uploads": "state = 'receiving'",  # and unexpired: list_page adds it
}
# The columns update() may write (SessionField), and how a session's value is stored.
_UPDATABLE: Final = frozenset(
    {"length", "expires", "state", "hashed_offset", "hash_state", "sha256", "finished", "used_by"}
)


class PgSessions:
    """:class:`~freight.core.ports.SessionRepository` over a pool of connections."""

    def __init__(self, pool: asyncpg.Pool, *, acquire_timeout: float = 15.0) -> None:
        self._pool = pool
        self._acquire_timeout = acquire_timeout

    async def _fetch(self, what: str, sql: str, *args: Any) -> list[asyncpg.Record]:
        with translate(what):
            async with self._pool.acquire(timeout=self._acquire_timeout) as connection:
                return await connection.fetch(sql, *args)

    async def create(self, session: UploadSession) -> None:
        try:
            await self._fetch("recording a new upload", _INSERT, *_to_row(session))
        except FreightError as exc:
            if isinstance(exc.__cause__, asyncpg.UniqueViolationError):
                raise FreightError(f"upload id {session.id!r} already exists") from exc
            raise

    async def load(self, upload_id: str) -> UploadSession:
        rows = await self._fetch("loading an upload", f"{_SELECT} WHERE id = $1", upload_id)
        if not rows:
            raise UploadNotFound(f"upload {upload_id!r} not found")
        return _from_row(rows[0])

    async def record_received(
        self,
        upload_id: str,
        start: int,
        end: int,
        *,
        expires: float | None,
        fence: HeldClaim | None = None,
    ) -> RangeSet:
        if start < 0 or end < start:
            raise ValueError(f"bad range [{start}, {end})")
        if isinstance(fence, PgClaim):
            return await self._record_fenced(upload_id, start, end, expires, fence)
        rows = await self._fetch(
            "recording received bytes", _RECORD, upload_id, start, end, expires
        )
        if not rows:
            raise UploadNotFound(f"upload {upload_id!r} not found")
        return _ranges(rows[0]["received"])

    async def _record_fenced(
        self, upload_id: str, start: int, end: int, expires: float | None, fence: PgClaim
    ) -> RangeSet:
        """Record only while ``fence`` counts; the upload's claim lock, taken shared, keeps
        a take-over (which takes it exclusively) from slipping in between check and merge."""
        with translate("recording received bytes"):
            async with (
                self._pool.acquire(timeout=self._acquire_timeout) as connection,
                connection.transaction(),
            ):
                await connection.execute(_FENCE_LOCK, upload_id)
                row = await connection.fetchrow(
                    _RECORD_FENCED, upload_id, start, end, expires, fence.claim_id, fence.node_key
                )
        assert row is not None
        if row["received"] is not None:
            return _ranges(row["received"])
        if not row["present"]:
            raise UploadNotFound(f"upload {upload_id!r} not found")
        raise UploadLocked("this request no longer holds these bytes: another one took over")

    async def update(
        self,
        session: UploadSession,
        fields: Collection[SessionField],
        *,
        expect: UploadState | None = None,
        outbox: Sequence[OutboxEntry] = (),
    ) -> bool:
        names = sorted(set(fields))
        unknown = [name for name in names if name not in _UPDATABLE]
        if unknown:
            raise ValueError(f"not updatable session fields: {unknown}")
        values = _to_values(session)
        arguments: list[Any] = [session.id, *(values[name] for name in names)]
        condition = "id = $1"
        if expect is not None:
            arguments.append(expect.value)
            condition += f" AND state = ${len(arguments)}"
        if names:
            assignments = ", ".join(f"{name} = ${n}" for n, name in enumerate(names, start=2))
            change = f"UPDATE freight_uploads SET {assignments} WHERE {condition} RETURNING 1"
        else:
            # Nothing to write: the record "changes" as a write of no fields would (it is
            # there, in the expected state), as every repository answers.
            change = f"SELECT 1 FROM freight_uploads WHERE {condition}"
        sql = (
            f"WITH changed AS ({change}) SELECT EXISTS (SELECT 1 FROM changed) AS changed,"
            " EXISTS (SELECT 1 FROM freight_uploads WHERE id = $1) AS present"
        )
        rows = await self._changing("updating an upload", outbox, sql, *arguments)
        changed, present = bool(rows[0]["changed"]), bool(rows[0]["present"])
        if not (changed or present):
            raise UploadNotFound(f"upload {session.id!r} not found")
        return changed

    async def delete(self, upload_id: str, *, outbox: Sequence[OutboxEntry] = ()) -> None:
        await self._changing(
            "deleting an upload",
            outbox,
            "WITH changed AS (DELETE FROM freight_uploads WHERE id = $1 RETURNING 1)"
            " SELECT EXISTS (SELECT 1 FROM changed) AS changed",
            upload_id,
        )

    async def _changing(
        self, what: str, outbox: Sequence[OutboxEntry], sql: str, *args: Any
    ) -> list[asyncpg.Record]:
        """Run ``sql`` (whose one row says whether it ``changed`` the record) and, in the
        same transaction when it did, add ``outbox``."""
        if not outbox:
            return await self._fetch(what, sql, *args)
        with translate(what):
            async with (
                self._pool.acquire(timeout=self._acquire_timeout) as connection,
                connection.transaction(),
            ):
                rows = await connection.fetch(sql, *args)
                if rows[0]["changed"]:
                    await pg_outbox.add_entries(connection, outbox)
                return rows

    # the hook outbox (HookOutbox) ---------------------------------------------------------

    async def take_due(self, now: float, limit: int, lease: float) -> list[OutboxEntry]:
        rows = await self._fetch("taking hook events", pg_outbox.TAKE_DUE, now, limit, lease)
        return pg_outbox.entries(rows)

    async def delivered(self, key: str) -> None:
        await self._fetch("settling a hook event", pg_outbox.FORGET, key)

    async def retry_later(self, key: str, due: float, error: str) -> None:
        await self._fetch("postponing a hook event", pg_outbox.POSTPONE, key, due, error[:500])

    async def outbox_depth(self) -> int:
        rows = await self._fetch("counting hook events", pg_outbox.DEPTH)
        return int(rows[0][0])

    async def list_all(self) -> list[UploadSession]:
        rows = await self._fetch("listing uploads", f"{_SELECT} ORDER BY created, id")
        return [_from_row(row) for row in rows]

    async def list_page(
        self,
        kind: ListingKind,
        after: PageKey | None,
        limit: int,
        now: float,
        owner: str | None = None,
    ) -> list[UploadSession]:
        arguments: list[Any] = []

        def argument(value: Any) -> str:
            arguments.append(value)
            return f"${len(arguments)}"

        sql = f"{_SELECT} WHERE {_LISTINGS[kind]}"
        if kind == "uploads":
            sql += f" AND (expires IS NULL OR expires >= {argument(now)})"
        if owner is not None:
            sql += f" AND owner = {argument(owner)}"
        if after is not None:
            sql += f" AND (created, id) > ({argument(after[0])}, {argument(after[1])})"
        sql += f" ORDER BY created, id LIMIT {argument(limit)}"
        rows = await self._fetch("listing uploads", sql, *arguments)
        return [_from_row(row) for row in rows]

    async def find_finished(
        self, size: int, sha256: str | None, owner: str | None = None
    ) -> UploadSession | None:
        sql = f"{_SELECT} WHERE {_LISTINGS['files']} AND length = $1"
        arguments: list[Any] = [size]
        if sha256 is not None:
            arguments.append(sha256)
            sql += f" AND sha256 = ${len(arguments)}"
        if owner is not None:
            arguments.append(owner)
            sql += f" AND owner = ${len(arguments)}"
        sql += " ORDER BY created, id LIMIT 1"
        rows = await self._fetch("finding a file by size and digest", sql, *arguments)
        return _from_row(rows[0]) if rows else None

    async def unfinished_totals(self, now: float, client: str | None = None) -> UnfinishedTotals:
        sql = (
            "SELECT count(*) AS count,"
            " coalesce(sum(greatest(coalesce(length, 0) - received_bytes, 0)), 0) AS pending"
            f" FROM freight_uploads WHERE {_UNFINISHED}"
        )
        arguments: list[Any] = [now]
        if client is not None:
            sql += " AND client = $2"
            arguments.append(client)
        rows = await self._fetch("totalling unfinished uploads", sql, *arguments)
        return UnfinishedTotals(count=int(rows[0]["count"]), pending_bytes=int(rows[0]["pending"]))

    async def work_ids(self, limit: int) -> list[str]:
        rows = await self._fetch(
            "finding uploads to finish",
            "SELECT id FROM freight_uploads WHERE (state = 'receiving' AND length IS NOT NULL"
            " AND received_bytes >= length) OR state = 'assembling' ORDER BY created LIMIT $1",
            limit,
        )
        return [row["id"] for row in rows]

    async def expired_ids(self, now: float) -> list[str]:
        rows = await self._fetch(
            "finding expired uploads",
            "SELECT id FROM freight_uploads WHERE expires IS NOT NULL AND expires < $1",
            now,
        )
        return [row["id"] for row in rows]

    async def close(self) -> None:
        with translate("closing the session database"):
            await self._pool.close()


async def open_pg_sessions(dsn: str, settings: PoolSettings | None = None) -> PgSessions:
    """Connect to ``dsn`` (``postgresql://user@host:port/database``), create or migrate the
    tables, and return the repository; closing it closes the pool."""
    settings = settings or PoolSettings()
    pool = await create_pool(dsn, settings)
    try:
        with translate("preparing the session database"):
            async with pool.acquire(timeout=settings.acquire_timeout) as connection:
                await ensure_schema(connection)
    except BaseException:
        await pool.close()
        raise
    return PgSessions(pool, acquire_timeout=settings.acquire_timeout)


def _to_values(session: UploadSession) -> dict[str, Any]:
    return {
        "id": session.id,
        "length": session.length,
        "metadata": json.dumps(session.metadata),
        "received": _flat(session.received),
        "state": session.state.value,
        "hashed_offset": session.hashed_offset,
        "hash_state": session.hash_state,
        "created": session.created,
        "expires": session.expires,
        "concat_kind": session.concat_kind.value if session.concat_kind else None,
        "concat_parts": list(session.concat_parts),
        "sha256": session.sha256,
        "finished": session.finished,
        "client": session.client,
        "received_bytes": session.received.total(),
        "used_by": session.used_by,
        "chunk_size": session.chunk_size,
        "declared_sha256": session.declared_sha256,
        "owner": session.owner,
    }


def _to_row(session: UploadSession) -> list[Any]:
    values = _to_values(session)
    return [values[name] for name in _COLUMNS]


def _flat(ranges: RangeSet) -> list[int]:
    return [bound for pair in ranges for bound in pair]


def _ranges(flat: Sequence[int]) -> RangeSet:
    return RangeSet(zip(flat[::2], flat[1::2], strict=True))


def _from_row(row: asyncpg.Record) -> UploadSession:
    return UploadSession(
        id=row["id"],
        length=row["length"],
        metadata=json.loads(row["metadata"]),
        created=row["created"],
        expires=row["expires"],
        received=_ranges(row["received"]),
        state=UploadState(row["state"]),
        hashed_offset=row["hashed_offset"],
        hash_state=row["hash_state"],
        concat_kind=ConcatKind(row["concat_kind"]) if row["concat_kind"] else None,
        concat_parts=tuple(row["concat_parts"]),
        sha256=row["sha256"],
        finished=row["finished"],
        client=row["client"],
        used_by=row["used_by"],
        chunk_size=row["chunk_size"],
        declared_sha256=row["declared_sha256"],
        owner=row["owner"],
    )
