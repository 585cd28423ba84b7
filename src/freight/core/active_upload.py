"""An upload in the engine's memory, and the two ways its session changes in the repository.

:func:`record` adds bytes received (one atomic merge in the repository, so two recordings
never lose each other's ranges); :func:`persist` writes named fields, in order, optionally
as a compare-and-set on the state.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from freight.core.blobs import BlobWriter
from freight.core.hashing import StatefulSha256
from freight.core.inline_hash import InlineHash
from freight.core.ports import HeldClaim, OutboxEntry, SessionField, SessionRepository
from freight.core.session import UploadSession, UploadState
from freight.core.writer import UploadWriter

__all__ = ["ActiveUpload", "persist", "record"]

_FIELDS = frozenset(SessionField.__args__)  # type: ignore[attr-defined]


@dataclass
class ActiveUpload:
    """The in-memory side of a session that is being written or was recently."""

    session: UploadSession
    hasher: StatefulSha256 | None
    part: BlobWriter | None = None
    save_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    writers: set[UploadWriter] = field(default_factory=set)
    bytes_written: int = 0  # every byte written since start-up, duplicates included
    last_progress: float = 0.0
    catch_up: asyncio.Task[None] | None = None  # hashing received bytes read back
    inline: InlineHash | None = None  # hashing bytes as writers pass them (no read-back)
    forgotten: bool = False  # deleted: background work must not save it again
    hash_moved: asyncio.Event = field(default_factory=asyncio.Event)  # set at each hash step
    hook_told: float = 0.0  # when a post-receive hook last went out for it

    @property
    def transferred(self) -> int:
        """Durable bytes plus those written that a writer has not recorded yet."""
        return self.session.received.total() + sum(w.unrecorded for w in self.writers)


async def record(
    sessions: SessionRepository,
    active: ActiveUpload,
    start: int,
    end: int,
    expires: float | None,
    fence: HeldClaim | None = None,
) -> None:
    """Record ``[start, end)`` as received (durable already) and move the expiry.

    Only once the repository has it do the bytes count in memory (and so in any offset a
    client is told): a record that fails, on a full disk say, leaves no trace.
    """
    stored = await sessions.record_received(
        active.session.id, start, end, expires=expires, fence=fence
    )
    session = active.session
    session.received.add(start, end)
    for have_start, have_end in stored:
        session.received.add(have_start, have_end)  # what other writers recorded meanwhile
    session.expires = expires


async def persist(
    sessions: SessionRepository,
    active: ActiveUpload,
    *,
    expect: UploadState | None = None,
    apply: bool = True,
    outbox: Sequence[OutboxEntry] = (),
    **changes: Any,
) -> bool:
    """Write ``changes`` (session fields and their new values) to the repository.

    Writes of one upload go in order. ``apply`` makes the changes in memory too, once
    saved; with ``expect``, only if the stored state still is ``expect`` (returns whether
    it was). ``outbox`` entries are written in the same transaction, if it changed.
    """
    unknown = set(changes) - _FIELDS
    if unknown:
        raise ValueError(f"not fields a repository update may change: {sorted(unknown)}")
    fields = cast(list[SessionField], list(changes))
    async with active.save_lock:
        snapshot = dataclasses.replace(active.session, **changes)
        if not await sessions.update(snapshot, fields, expect=expect, outbox=outbox):
            return False
        if apply:
            for name, value in changes.items():
                setattr(active.session, name, value)
        return True
