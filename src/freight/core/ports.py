"""The engine's ports: what it needs from the world outside one process, as small interfaces
it owns. Backends (:mod:`freight.storage`) implement them; the engine never knows which.

* :class:`SessionRepository` keeps session records (SQLite today, PostgreSQL for a fleet);
* :class:`~freight.core.blobs.BlobStore` keeps the bytes (local files, memory, an object
  store), with its optional abilities declared beside it in :mod:`freight.core.blobs`;
* :class:`ClaimRegistry` hands out byte-range claims and asks their holders to let go;
* :class:`EventBus` carries what happens to uploads to whoever watches.

Every method that may wait on I/O is a coroutine; a backend whose library blocks runs it in
a worker thread itself. A backend raises :class:`freight.errors.UploadNotFound` for unknown
ids and :class:`freight.errors.InsufficientStorage` when it runs out of space; any other
failure is wrapped in a :class:`freight.errors.FreightError`, never leaked raw.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol, TypeAlias

from freight.core.rangeset import RangeSet
from freight.core.session import UploadSession, UploadState

if TYPE_CHECKING:
    from freight.core.blobs import BlobStore
    from freight.core.events import UploadEvent, Watcher

__all__ = [
    "Backend",
    "ClaimRegistry",
    "EventBus",
    "HeldClaim",
    "HookOutbox",
    "Leadership",
    "ListingKind",
    "OutboxEntry",
    "PageKey",
    "SessionField",
    "SessionRepository",
    "SoleNode",
    "UnfinishedTotals",
]

ListingKind: TypeAlias = Literal["files", "uploads"]
"""``files``: finished uploads (no used concatenation parts); ``uploads``: unexpired ones
still receiving."""

PageKey: TypeAlias = tuple[float, str]
"""Where a listing page ends: the last session's ``(created, id)``."""

SessionField: TypeAlias = Literal[
    "length",
    "expires",
    "state",
    "hashed_offset",
    "hash_state",
    "sha256",
    "finished",
    "used_by",
]
"""The fields :meth:`SessionRepository.update` may change. ``received`` is not one of them:
it only grows, through :meth:`SessionRepository.record_received`."""


@dataclass(frozen=True)
class OutboxEntry:
    """A hook event that must reach its receiver (at least once), stored in the same
    transaction as the change it reports.

    ``key`` is its idempotency key, the same for every delivery attempt of the event (an
    entry with a key already waiting is not added twice); ``payload`` is the JSON body the
    receiver gets. ``attempts`` and ``due`` are the delivery worker's: how often it failed
    so far, and when it may try again (seconds since the epoch).
    """

    key: str
    event: str
    upload_id: str
    payload: str
    created: float
    attempts: int = 0
    due: float = 0.0


@dataclass(frozen=True)
class UnfinishedTotals:
    """Unfinished uploads, and the bytes they still need (declared minus received)."""

    count: int
    pending_bytes: int


class SessionRepository(Protocol):
    """Session records. Every change is one atomic statement on one record: two nodes (or
    two requests) recording different byte ranges of one upload never lose each other's."""

    async def create(self, session: UploadSession) -> None:
        """Record a new session (its id is new: a clash is a bug, not a retry)."""

    async def load(self, upload_id: str) -> UploadSession: ...

    async def record_received(
        self,
        upload_id: str,
        start: int,
        end: int,
        *,
        expires: float | None,
        fence: HeldClaim | None = None,
    ) -> RangeSet:
        """Add ``[start, end)`` to the stored ranges and set ``expires``, atomically;
        returns the stored ranges after the change (which may hold ranges others added).

        The caller has made those bytes durable first: a record never runs ahead of them.
        With ``fence`` (the claim the bytes were written under), only while that claim is
        still held: a writer that lost its claim (its node was cut off and another took
        over) records nothing, and gets :class:`freight.errors.UploadLocked`. A registry
        whose claims cannot be lost behind their holder's back may ignore it.
        """

    async def update(
        self,
        session: UploadSession,
        fields: Collection[SessionField],
        *,
        expect: UploadState | None = None,
        outbox: Sequence[OutboxEntry] = (),
    ) -> bool:
        """Write ``fields`` of ``session`` to its record, nothing else.

        With ``expect``, only if the stored state is still ``expect`` (compare and set);
        returns whether the record changed. A record that is gone raises UploadNotFound.
        ``outbox`` entries are added in the same transaction, only if the record changed.
        """

    async def delete(self, upload_id: str, *, outbox: Sequence[OutboxEntry] = ()) -> None:
        """Forget the record; unknown ids are not an error. ``outbox`` entries are added
        in the same transaction, only if a record was there to delete."""

    async def list_all(self) -> list[UploadSession]:
        """Every record: for tests and small tools; listings go by :meth:`list_page`."""

    async def list_page(
        self,
        kind: ListingKind,
        after: PageKey | None,
        limit: int,
        now: float,
        owner: str | None = None,
    ) -> list[UploadSession]:
        """Up to ``limit`` sessions of a listing in creation order, after ``after``;
        ``owner``'s only if given."""

    async def find_finished(
        self, size: int, sha256: str | None, owner: str | None = None
    ) -> UploadSession | None:
        """A finished file (listed like ``list_page("files")``) of ``size`` bytes whose
        SHA-256 is ``sha256`` (lowercase hex; any with None), the oldest if several; None
        if there is none.
        ``owner`` narrows it to one owner's files; None: anyone's.
        Indexed: a client asks before each file it sends."""

    async def unfinished_totals(self, now: float, client: str | None = None) -> UnfinishedTotals:
        """Unexpired unfinished uploads (only ``client``'s if given) and what they need."""

    async def work_ids(self, limit: int) -> list[str]:
        """Complete uploads not finished yet, and concatenations waiting to be assembled."""

    async def expired_ids(self, now: float) -> list[str]:
        """Unfinished uploads whose ``expires`` is before ``now``."""

    async def close(self) -> None: ...


class HookOutbox(Protocol):
    """The hook events waiting for delivery (:class:`OutboxEntry`), kept beside the session
    records so an entry is written in the same transaction as the change it reports.

    Several delivery workers (nodes of a fleet) may share it: :meth:`take_due` leases what it
    returns, so one entry is delivered by one worker at a time; a lease that runs out (its
    worker died) lets another worker take the entry.
    """

    async def take_due(self, now: float, limit: int, lease: float) -> list[OutboxEntry]:
        """Up to ``limit`` entries due by ``now`` and not leased, oldest first, leased to the
        caller until ``now + lease``."""

    async def delivered(self, key: str) -> None:
        """Remove the entry: its receiver has it."""

    async def retry_later(self, key: str, due: float, error: str) -> None:
        """The delivery failed: count the attempt, release the lease, try again at ``due``."""

    async def outbox_depth(self) -> int:
        """Entries waiting for delivery."""


class HeldClaim(Protocol):
    """A claim as its holder sees it: the range, and a way to let go."""

    @property
    def start(self) -> int: ...

    @property
    def end(self) -> int: ...


class ClaimRegistry(Protocol):
    """Byte-range claims on uploads, with take-over.

    A writer claims the range it will write; an overlapping claim is refused with
    :class:`freight.errors.UploadLocked`. A claim may carry ``interrupt``: a newer request
    for the same bytes asks its holder to let go (the holder keeps what is durable, then
    releases) and waits, boundedly, until it has. tusd's ``Lock(requestRelease)`` is the
    same idea for whole uploads.
    """

    async def claim(
        self,
        upload_id: str,
        start: int,
        end: int,
        interrupt: Callable[[int | None], None] | None = None,
    ) -> HeldClaim:
        """Claim ``[start, end)``; ``interrupt(rewrites)`` is how a newer request asks
        this one to end (bytes from ``rewrites`` on are the newer one's to write again)."""

    async def release(self, claim: HeldClaim) -> None: ...

    async def held(self, upload_id: str) -> bool:
        """Whether anyone (any node) holds a claim on the upload."""

    def held_here(self, upload_id: str) -> bool:
        """Whether a request of this process holds a claim on the upload (no I/O)."""

    async def take_over(self, upload_id: str, start: int, end: int, rewrites: int | None) -> bool:
        """Ask the holders of claims overlapping ``[start, end)`` to let go and wait (a
        while) until they have; returns whether it asked anyone."""

    async def interrupt_all(self) -> None:
        """Ask every holder to let go and wait (a while): for a shutdown."""


class EventBus(Protocol):
    """What happens to uploads, for whoever watches (dashboards, SSE, metrics)."""

    def publish(self, event: UploadEvent) -> None: ...

    def watch(self) -> contextlib.AbstractContextManager[Watcher]: ...

    def subscribe(self) -> contextlib.AbstractContextManager[asyncio.Queue[UploadEvent]]:
        """Every event through a bounded queue (the oldest is dropped when it is full)."""

    def wake(self) -> None:
        """Wake every watcher now (a shutdown)."""

    @property
    def subscriber_count(self) -> int: ...


class Leadership(Protocol):
    """Which node does the background work (expiry, finishing what clients left) now."""

    async def is_leader(self) -> bool:
        """Whether this node leads now (a node takes the lead when nobody holds it)."""

    async def close(self) -> None: ...


class SoleNode:
    """One process alone: it always leads."""

    async def is_leader(self) -> bool:
        return True

    async def close(self) -> None:
        return None


@dataclass(frozen=True)
class Backend:
    """Where one engine keeps things, and how it shares them with other nodes.

    A single-process backend gives only ``sessions`` and ``blobs``; the engine then keeps
    claims and events in memory and always leads. A fleet's backend gives all five.
    """

    sessions: SessionRepository
    blobs: BlobStore
    claims: ClaimRegistry | None = None
    events: EventBus | None = None
    leadership: Leadership = field(default_factory=SoleNode)

    async def close(self) -> None:
        """Close every part, even when one fails (the first failure is raised after)."""
        parts: list[object] = [self.claims, self.events, self.leadership, self.blobs]
        failure: Exception | None = None
        for part in [*parts, self.sessions]:
            close = getattr(part, "close", None)
            if close is None:
                continue
            try:
                await close()
            except Exception as exc:
                failure = failure or exc
        if failure is not None:
            raise failure
