"""Session records in SQLite: the local backend's :class:`~freight.core.ports.SessionRepository`.

Implementation: one row per upload in ``freight.db`` (WAL), through one connection guarded
by a lock (:class:`~freight.storage.local_db.SessionTable`); every coroutine runs its
statement in a worker thread, so a slow disk never stalls the event loop.

Considerations:

* ``record_received`` reads the row's ranges, merges and writes them back in one
  ``BEGIN IMMEDIATE`` transaction: SQLite lets one writer in at a time across every
  connection and process, so concurrent recorders never lose each other's ranges.
* ``update`` writes only the columns it is given (``WHERE state = ?`` for a compare and
  set): a stale copy of a session never undoes what another request recorded.
* With ``durable`` the database runs ``synchronous=FULL``: a committed record survives a
  power cut, and it is only written after the bytes it describes were synced.
* ``update`` and ``delete`` add the hook outbox entries they carry in their own transaction
  (:mod:`~freight.storage.local_outbox`); the same object is the
  :class:`~freight.core.ports.HookOutbox` the delivery worker reads.
* When the disk is full, ``on_full`` is asked to free room (the blob store's space reserve)
  and the write is tried once more; then it is :class:`~freight.errors.InsufficientStorage`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Sequence
from pathlib import Path

from freight.core.ports import (
    HeldClaim,
    ListingKind,
    OutboxEntry,
    PageKey,
    SessionField,
    UnfinishedTotals,
)
from freight.core.rangeset import RangeSet
from freight.core.session import UploadSession, UploadState
from freight.errors import UploadNotFound
from freight.storage.ids import is_upload_id
from freight.storage.local_db import SessionTable

__all__ = ["SqliteSessions"]


def _never_frees() -> bool:
    return False


def _checked(upload_id: str) -> str:
    if not is_upload_id(upload_id):
        raise UploadNotFound("no such upload")
    return upload_id


class SqliteSessions:
    """Session records in the SQLite database at ``path``."""

    def __init__(
        self, path: Path, *, durable: bool = True, on_full: Callable[[], bool] = _never_frees
    ) -> None:
        self.path = path
        self.table = SessionTable(path, durable=durable, on_full=on_full)

    async def create(self, session: UploadSession) -> None:
        _checked(session.id)
        await asyncio.to_thread(self.table.insert, session)

    async def load(self, upload_id: str) -> UploadSession:
        session = await asyncio.to_thread(self.table.get, _checked(upload_id))
        if session is None:
            raise UploadNotFound("no such upload")
        return session

    async def record_received(
        self,
        upload_id: str,
        start: int,
        end: int,
        *,
        expires: float | None,
        fence: HeldClaim | None = None,
    ) -> RangeSet:
        # Claims here are this process's own (InProcessClaims): never lost behind a writer's
        # back, so there is nothing to fence.
        return await asyncio.to_thread(
            self.table.record_received, _checked(upload_id), start, end, expires
        )

    async def update(
        self,
        session: UploadSession,
        fields: Collection[SessionField],
        *,
        expect: UploadState | None = None,
        outbox: Sequence[OutboxEntry] = (),
    ) -> bool:
        _checked(session.id)
        return await asyncio.to_thread(self.table.update, session, fields, expect, outbox)

    async def delete(self, upload_id: str, *, outbox: Sequence[OutboxEntry] = ()) -> None:
        if is_upload_id(upload_id):
            await asyncio.to_thread(self.table.remove, upload_id, outbox)

    # the hook outbox (HookOutbox) ---------------------------------------------------------

    async def take_due(self, now: float, limit: int, lease: float) -> list[OutboxEntry]:
        return await asyncio.to_thread(self.table.take_due, now, limit, lease)

    async def delivered(self, key: str) -> None:
        await asyncio.to_thread(self.table.outbox_delivered, key)

    async def retry_later(self, key: str, due: float, error: str) -> None:
        await asyncio.to_thread(self.table.outbox_retry, key, due, error)

    async def outbox_depth(self) -> int:
        return await asyncio.to_thread(self.table.outbox_depth)

    async def list_all(self) -> list[UploadSession]:
        return await asyncio.to_thread(self.table.all)

    async def list_page(
        self,
        kind: ListingKind,
        after: PageKey | None,
        limit: int,
        now: float,
        owner: str | None = None,
    ) -> list[UploadSession]:
        return await asyncio.to_thread(self.table.page, kind, after, limit, now, owner)

    async def find_finished(
        self, size: int, sha256: str | None, owner: str | None = None
    ) -> UploadSession | None:
        return await asyncio.to_thread(self.table.find_finished, size, sha256, owner)

    async def unfinished_totals(self, now: float, client: str | None = None) -> UnfinishedTotals:
        return await asyncio.to_thread(self.table.unfinished_totals, now, client)

    async def work_ids(self, limit: int) -> list[str]:
        return await asyncio.to_thread(self.table.work_ids, limit)

    async def expired_ids(self, now: float) -> list[str]:
        return await asyncio.to_thread(self.table.expired_ids, now)

    def ids(self) -> set[str]:
        """Every id, synchronously: for the start-up repair."""
        return self.table.ids()

    async def close(self) -> None:
        await asyncio.to_thread(self.table.close)
