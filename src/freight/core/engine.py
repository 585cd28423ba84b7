"""The upload engine: every protocol adapter creates, writes, finishes and deletes through it.

Rules it keeps, whatever protocol fed it:

* A session's ``received`` ranges only grow, and only with bytes that are durable under the
  fsync policy; a request that fails keeps what was durable before it failed, unless its
  checksum was pending (then none of it counts).
* Writers claim the byte range they will write. A claim overlapping another one is refused
  with :class:`UploadLocked`; a sequential writer (tus) claims everything from its offset.
* The running SHA-256 trails the writers: once bytes of the contiguous prefix are recorded,
  a background task hashes them from the page cache they were just written to. Receiving
  never waits for hashing (which is what lets bytes go from socket to file without passing
  through Python) unless the hash falls :attr:`UploadEngine.hash_lag` bytes behind.
* ``receiving`` → ``finished`` (a final concatenation: ``assembling`` → ``finished``).
  Finishing is a rename; a finished upload never changes again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from freight.config import FsyncPolicy
from freight.core.admission import Admission
from freight.core.buffers import BufferPool, ReadBuffers
from freight.core.events import EventHub, UploadEvent, UploadEventKind
from freight.core.hashing import StatefulSha256, new_sha256, sha256_from_state
from freight.core.ports import ListingKind, PageKey, PartFile, UploadStore
from freight.core.session import ConcatKind, UploadSession, UploadState, new_upload_id
from freight.core.writer import RequestChecksum, UploadWriter
from freight.errors import (
    ChecksumMismatch,
    ConcatenationError,
    FreightError,
    InsufficientStorage,
    LengthMismatch,
    OffsetMismatch,
    RangeAlreadyReceived,
    UploadExpired,
    UploadForbidden,
    UploadIncomplete,
    UploadLocked,
    UploadNotFound,
    UploadTooLarge,
)

__all__ = ["ActiveUpload", "UploadEngine"]

log = logging.getLogger(__name__)

_EVERYTHING = 1 << 63
_IDLE_CACHE = 256
CONSUMED_PART_GRACE = 600.0
# How long a request taking an upload over waits for the interrupted one to let go.
TAKE_OVER_WAIT = 5.0
# The running hash reads back this much at a time, then tells waiting writers it moved.
HASH_STEP = 8 * 1024 * 1024
# The sweeper finishes a complete upload nobody finished once it was left alone this long
# (its client normally finishes it at once, maybe with a digest to check).
FINISH_GRACE = 5.0
# Uploads the sweeper takes further per round.
WORK_BATCH = 100


@dataclass(eq=False)
class Claim:
    """A byte range one request is writing; ``interrupt`` ends that request (take-over)."""

    start: int
    end: int
    interrupt: Callable[[], None] | None = None
    released: asyncio.Event = field(default_factory=asyncio.Event)
    writer: UploadWriter | None = None  # the writer holding it, once there is one

    def overlaps(self, start: int, end: int) -> bool:
        return self.start < end and start < self.end


@dataclass
class ActiveUpload:
    """The in-memory side of a session that is being written or was recently."""

    session: UploadSession
    hasher: StatefulSha256 | None
    claims: list[Claim] = field(default_factory=list)
    part: PartFile | None = None
    save_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    writers: set[UploadWriter] = field(default_factory=set)
    bytes_written: int = 0  # every byte written since start-up, duplicates included
    last_progress: float = 0.0
    catch_up: asyncio.Task[None] | None = None  # hashing received bytes from disk
    forgotten: bool = False  # deleted: background work must not save it again
    hash_moved: asyncio.Event = field(default_factory=asyncio.Event)  # set at each hash step

    @property
    def hash_is_free(self) -> bool:
        busy = self.catch_up is not None and not self.catch_up.done()
        return self.hasher is not None and not busy

    @property
    def transferred(self) -> int:
        """Durable bytes plus those on disk that a writer has not recorded yet."""
        return self.session.received.total() + sum(w.unrecorded for w in self.writers)

    def claim(self, start: int, end: int, interrupt: Callable[[], None] | None = None) -> Claim:
        if self.blocking(start, end):
            raise UploadLocked("another request is writing this upload right now")
        claim = Claim(start, end, interrupt)
        self.claims.append(claim)
        return claim

    def blocking(self, start: int, end: int) -> list[Claim]:
        return [claim for claim in self.claims if claim.overlaps(start, end)]

    def unclaim(self, claim: Claim) -> None:
        self.claims.remove(claim)
        claim.released.set()


class UploadEngine:
    def __init__(
        self,
        store: UploadStore,
        *,
        fsync: FsyncPolicy = FsyncPolicy.BATCH,
        sync_every: int = 64 * 1024 * 1024,
        expire_after: float = 24 * 3600.0,
        expire_unstarted: float | None = None,
        max_size: int | None = None,
        disk_reserve: int = 0,
        max_unfinished: int | None = None,
        max_unfinished_per_client: int | None = None,
        client_space_share: float = 1.0,
        hash_uploads: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        # Off: no running SHA-256; a digest is computed (from disk) only to check one a
        # client declared at finish.
        self.hash_uploads = hash_uploads
        self.fsync = fsync
        self.sync_every = sync_every
        # How far the running hash may trail the bytes written before writers wait for it:
        # bytes further behind may have left the page cache and would be read back from the
        # disk. Recording (which the hash waits for) trails writing by ``sync_every``, so
        # less than twice that would make hashing and receiving take turns.
        self.hash_lag = 2 * sync_every
        self.expire_after = expire_after
        # Until its first byte is recorded an upload goes sooner, never later than others.
        self.expire_unstarted = min(expire_after, expire_unstarted or expire_after)
        self.max_size = max_size
        self.disk_reserve = disk_reserve
        self.admission = Admission(
            disk_reserve=disk_reserve,
            max_unfinished=max_unfinished,
            max_unfinished_per_client=max_unfinished_per_client,
            client_space_share=client_space_share,
        )
        # Creations are admitted one at a time, so two cannot both take the last room.
        self._admission = asyncio.Lock()
        self.clock = clock
        self._active: dict[str, ActiveUpload] = {}
        self._concat_lock = asyncio.Lock()
        self._background: set[asyncio.Task[None]] = set()
        self.events = EventHub()
        self.buffers = BufferPool()
        self.read_buffers = ReadBuffers()
        self.bytes_written_total = 0
        self.progress_interval = 0.25

    # creating ----------------------------------------------------------------------------

    async def create(
        self,
        *,
        length: int | None,
        metadata: Mapping[str, str | None],
        concat_kind: ConcatKind | None = None,
        client: str | None = None,
        chunk_size: int | None = None,
        declared_sha256: str | None = None,
    ) -> UploadSession:
        """Start an upload; ``length=None`` defers the length.

        ``client`` (the peer's address) is held to the per-client caps. ``chunk_size`` and
        ``declared_sha256`` are the creating protocol's own state, kept beside (never in)
        the client's ``metadata``; finishing checks a declared SHA-256. The new upload
        takes no memory and no disk space until bytes arrive, and expires after
        :attr:`expire_unstarted` unless they do.
        """
        if length is not None:
            self._check_size(length)
        now = self.clock()
        session = UploadSession(
            id=new_upload_id(),
            length=length,
            metadata=dict(metadata),
            created=now,
            expires=now + self.expire_unstarted,
            concat_kind=concat_kind,
            client=client,
            chunk_size=chunk_size,
            declared_sha256=declared_sha256.lower() if declared_sha256 else None,
        )
        async with self._admission:
            await asyncio.to_thread(self._admit_and_store, session)
        self._publish_session(UploadEventKind.CREATED, session, 0)
        return session

    def _admit_and_store(self, session: UploadSession) -> None:
        self._admit(session.length or 0, session.client, new=True)
        self.store.create(session)

    def _admit(self, needed: int, client: str | None, *, new: bool) -> None:
        self.admission.check(self.store, self.clock(), needed, client, new=new)

    async def create_final(
        self, part_ids: Sequence[str], metadata: Mapping[str, str | None]
    ) -> UploadSession:
        """Create a final concatenation; it is assembled once every part is finished.

        A partial upload belongs to one final at most: each final copies its parts, so
        finals sharing parts would let a client have the server write any multiple of what
        it sent. The same list again (a client whose answer was lost retries) gets the
        final those parts already belong to; a part whose final was deleted is free again.
        """
        if not part_ids:
            raise ConcatenationError("a final concatenation needs at least one partial upload")
        if len(set(part_ids)) != len(part_ids):
            raise ConcatenationError("a partial upload may appear only once in a concatenation")
        # Held from checking the parts' owners to recording the new one: two finals
        # created at once must not both find a part free.
        async with self._concat_lock:
            parts = [await self._load_part(part_id) for part_id in part_ids]
            existing = await self._final_owning(parts)
            if existing is not None:
                return existing
            known = sum(p.length or 0 for p in parts)
            self._check_size(known)  # the final is a copy: as large again as its parts
            total = None if any(p.length is None for p in parts) else known
            now = self.clock()
            session = UploadSession(
                id=new_upload_id(),
                length=total,
                metadata=dict(metadata),
                created=now,
                expires=now + self.expire_after,
                state=UploadState.ASSEMBLING,
                concat_kind=ConcatKind.FINAL,
                concat_parts=tuple(part_ids),
            )
            # Parts first: one owned by a final that never came to be is free again.
            for part in parts:
                owned = await self._activate(part.id)
                owned.session.used_by = session.id
                await self._save(owned)
            await asyncio.to_thread(self.store.create, session)
            hasher = new_sha256() if self.hash_uploads else None
            active = self._active[session.id] = ActiveUpload(session, hasher)
            self._publish(UploadEventKind.CREATED, active)
        if all(p.is_finished for p in parts):
            await self._assemble(session.id)
        return await self.get(session.id)

    async def _final_owning(self, parts: Sequence[UploadSession]) -> UploadSession | None:
        """The final made of exactly ``parts`` if there is one; refuses parts used elsewhere."""
        owners: dict[str, UploadSession | None] = {}
        for part in parts:
            if part.used_by is not None and part.used_by not in owners:
                owners[part.used_by] = await self._live_final(part.used_by)
        live = {owner: final for owner, final in owners.items() if final is not None}
        if not live:
            return None
        taken = [p.id for p in parts if p.used_by in live]
        if len(live) == 1 and len(taken) == len(parts):
            [final] = live.values()
            if final.concat_parts == tuple(taken):
                return final
        raise ConcatenationError(
            f"partial upload {taken[0]} already belongs to another final upload"
        )

    async def _live_final(self, final_id: str) -> UploadSession | None:
        try:
            final = await self.get(final_id)
        except (UploadNotFound, UploadExpired):
            return None
        return final if final.concat_kind is ConcatKind.FINAL else None

    async def _load_part(self, part_id: str) -> UploadSession:
        try:
            part = await self.get(part_id)
        except (UploadNotFound, UploadExpired) as exc:
            raise ConcatenationError(f"partial upload {part_id} does not exist") from exc
        if part.concat_kind is not ConcatKind.PARTIAL:
            raise ConcatenationError(f"upload {part_id} is not a partial upload")
        return part

    def _check_size(self, length: int) -> None:
        if self.max_size is not None and length > self.max_size:
            raise UploadTooLarge(
                f"{length} bytes is more than this server accepts ({self.max_size})",
                max_size=self.max_size,
            )
        if length > self.store.free_bytes() - self.disk_reserve:
            raise InsufficientStorage("the server does not have the disk space for this upload")

    # reading state -----------------------------------------------------------------------

    async def get(self, upload_id: str) -> UploadSession:
        active = self._active.get(upload_id)
        session = active.session if active else await asyncio.to_thread(self.store.load, upload_id)
        self._check_not_expired(session)
        return session

    def _check_not_expired(self, session: UploadSession) -> None:
        # Finished files carry no expiry; used concatenation parts do, for a grace period.
        if session.expires is not None and session.expires < self.clock():
            raise UploadExpired("this upload expired and is being deleted")

    async def list_sessions(self) -> list[UploadSession]:
        """Every session: for start-up work and tests; listings go by :meth:`list_page`."""
        stored = await asyncio.to_thread(self.store.list_sessions)
        return [self._active[s.id].session if s.id in self._active else s for s in stored]

    async def list_page(
        self, kind: ListingKind, after: PageKey | None, limit: int
    ) -> tuple[list[UploadSession], bool]:
        """Up to ``limit`` sessions of a listing after ``after``, and whether more follow."""
        stored = await asyncio.to_thread(self.store.list_page, kind, after, limit + 1, self.clock())
        page = [self._active[s.id].session if s.id in self._active else s for s in stored]
        return page[:limit], len(page) > limit

    def active_transfers(self, limit: int) -> list[UploadSession]:
        """Unexpired uploads receiving bytes now or lately (at most ``limit``, latest first):
        what a live view needs, from memory, never a scan of every session."""
        now = self.clock()
        sessions = [
            a.session
            for a in reversed(self._active.values())
            if a.session.state is not UploadState.FINISHED
            and (a.session.expires is None or a.session.expires >= now)
        ]
        return sessions[:limit]

    @property
    def uploads_being_written(self) -> int:
        """Uploads a request is writing right now; the other unfinished ones are idle."""
        return sum(1 for active in self._active.values() if active.writers)

    async def unfinished_count(self) -> int:
        totals = await asyncio.to_thread(self.store.unfinished_totals, self.clock())
        return totals.count

    async def _activate(self, upload_id: str) -> ActiveUpload:
        active = self._active.get(upload_id)
        if active is None:
            session = await asyncio.to_thread(self.store.load, upload_id)
            active = self._active.get(upload_id)
            if active is None:  # else another call activated it meanwhile, and may hash
                active = self._active[upload_id] = ActiveUpload(session, None)
                if self.hash_uploads:
                    active.hasher = _restore_hasher(session)
        else:
            # Most recently used last, so eviction drops the longest idle.
            self._active[upload_id] = self._active.pop(upload_id)
        self._check_not_expired(active.session)
        return active

    # writing -----------------------------------------------------------------------------

    async def declare_length(
        self,
        upload_id: str,
        length: int,
        *,
        interrupt: Callable[[], None] | None = None,
        offset: int | None = None,
    ) -> UploadSession:
        """Fix a deferred length (tus ``Upload-Length`` on a later PATCH).

        With ``interrupt`` (and the ``offset`` the request will write from), a request
        still writing the upload is taken over first, as :meth:`writer` does: a client
        retrying after a stalled link is not locked out until the old link times out.
        """
        active = await self._activate(upload_id)
        if active.claims and interrupt is not None and offset is not None:
            self._check_writable(active.session, offset, True)
            _check_offset(active.session, offset)
            if await self._take_over(active, offset, _EVERYTHING, offset):
                active = await self._activate(upload_id)
        session = active.session
        if active.claims:
            raise UploadLocked("the length cannot change while the upload is being written")
        if session.length is not None:
            if session.length != length:
                raise LengthMismatch(f"the upload's length is already {session.length}")
            return session
        if length < session.received.highest():
            raise LengthMismatch(f"{session.received.highest()} bytes were already received")
        self._check_size(length)
        needed = length - session.received.total()
        async with self._admission:
            await asyncio.to_thread(self._admit, needed, session.client, new=False)
            # In memory only once it is recorded: a failed save must leave no trace.
            await self._save(active, apply=True, length=length)
        return session

    @contextlib.asynccontextmanager
    async def writer(
        self,
        upload_id: str,
        offset: int | None,
        *,
        end: int | None = None,
        sequential: bool = True,
        checksum: RequestChecksum | None = None,
        all_or_nothing: bool = False,
        interrupt: Callable[[], None] | None = None,
    ) -> AsyncIterator[UploadWriter]:
        """Write from ``offset``; the caller must ``await writer.commit()`` to keep the bytes.

        ``sequential`` (tus, IETF) requires ``offset`` to be the current offset; otherwise
        ``end`` bounds the range written (chunk APIs writing in any order).
        ``all_or_nothing`` keeps nothing of a request that fails before ``commit``.

        ``interrupt`` ends the calling request (closes its connection). When given, a
        request still writing the same bytes is interrupted in turn and this one waits
        for it to let go: a client that reconnects after a dropped connection takes its
        upload over at once instead of waiting until the server notices the old
        connection is dead (tusd does the same). ``offset=None`` (sequential only) writes
        from wherever the upload stands once that is done.
        """
        if offset is None and not sequential:
            raise ValueError("only a sequential writer may start at the current offset")
        active = await self._activate(upload_id)
        claimed_end = end if end is not None else _EVERYTHING
        if interrupt is not None:
            # A sequential request takes over only from the current offset: a stale one
            # would cut a healthy request off and be refused all the same. What the old
            # request wrote from that offset on is the newer one's to write again.
            rewrites = offset if sequential else None
            if rewrites is not None:
                self._check_writable(active.session, rewrites, sequential)
                _check_offset(active.session, rewrites)
            if await self._take_over(active, offset or 0, claimed_end, rewrites):
                active = await self._activate(upload_id)  # it may have been dropped meanwhile
        session = active.session
        if offset is None:
            offset = session.offset
        self._check_writable(session, offset, sequential)
        if not sequential and session.received.overlaps(offset, end or _EVERYTHING):
            raise RangeAlreadyReceived(f"bytes from {offset} were already received")
        limit = session.length if session.length is not None else self.max_size
        claim = active.claim(offset, claimed_end, interrupt)
        try:
            if sequential:
                _check_offset(session, offset)
            part = await self._shared_part(active)
            bound = min(end, limit) if end is not None and limit is not None else end or limit
            writer = claim.writer = UploadWriter(
                self, active, part, offset, bound, checksum, all_or_nothing=all_or_nothing
            )
            active.writers.add(writer)
            try:
                yield writer
            finally:
                await writer.abort()
                writer.release_buffers()
                active.writers.discard(writer)
        finally:
            active.unclaim(claim)
            self._release(upload_id, active)

    async def _shared_part(self, active: ActiveUpload) -> PartFile:
        """The upload's open part file, shared by all its writers; the first opens it.

        Writers of other ranges (parallel chunks) can get here together: a copy opened
        while another writer was opening one is closed at once, or it would stay open
        for good and pin the file's disk space even after the upload is deleted.
        """
        if active.part is None:
            opening = asyncio.ensure_future(asyncio.to_thread(self.store.open_part, active.session))
            try:
                opened = await asyncio.shield(opening)
            except asyncio.CancelledError:
                opening.add_done_callback(_close_opened)
                raise
            if active.part is None:
                active.part = opened
            else:
                opened.close()
        return active.part

    async def _take_over(
        self, active: ActiveUpload, start: int, end: int, rewrites: int | None
    ) -> bool:
        """Interrupt the requests writing ``[start, end)`` and wait for them to let go.

        They keep what they made durable, except bytes from ``rewrites`` on (the newer
        request sends those again). Returns whether it waited (and so whether ``active``
        may be stale).
        """
        blocking = active.blocking(start, end)
        if not blocking or any(claim.interrupt is None for claim in blocking):
            return False  # nothing to take, or held by work that cannot be interrupted
        log.info("upload %s: a new request takes over from a running one", active.session.id)
        for claim in blocking:
            if rewrites is not None and claim.writer is not None:
                claim.writer.yield_from(rewrites)
        await _interrupt(blocking)
        return True

    def _check_writable(self, session: UploadSession, offset: int, sequential: bool) -> None:
        if session.concat_kind is ConcatKind.FINAL:
            raise UploadForbidden("a final concatenation cannot be written to")
        if session.state is not UploadState.RECEIVING:
            raise OffsetMismatch("this upload is already complete", offset=session.offset)
        if session.length is not None and offset > session.length:
            raise OffsetMismatch(
                f"offset {offset} is past the upload's length {session.length}",
                offset=session.offset,
            )
        if not sequential and offset < 0:
            raise OffsetMismatch("offsets are never negative", offset=session.offset)

    def _release(self, upload_id: str, active: ActiveUpload) -> None:
        if active.claims:
            return
        if active.part is not None:
            active.part.close()
            active.part = None
        idle = [key for key, value in self._active.items() if not value.claims]
        for key in idle[: max(0, len(idle) - _IDLE_CACHE)]:
            del self._active[key]

    async def record_received(self, active: ActiveUpload, start: int, end: int) -> None:
        """Called by writers once ``[start, end)`` is durable: make it count.

        The bytes count in memory (and so in any offset a client is told) only once the
        record is saved: a save that fails, on a full disk say, leaves the session as the
        store has it.
        """
        expires = self.clock() + self.expire_after
        await self._save(active, added=(start, end), apply=True, expires=expires)
        self._publish(UploadEventKind.PROGRESS, active)
        self._maybe_catch_up(active)

    async def hashed(self, upload_id: str) -> UploadSession:
        """The session once the running hash covers every byte of its contiguous prefix."""
        active = await self._activate(upload_id)
        while active.catch_up is not None and not active.catch_up.done():
            await asyncio.wait([active.catch_up])
        return active.session

    async def hash_progress(self, active: ActiveUpload) -> None:
        """Wait for the running hash to take its next step (at once if it is not running)."""
        if active.catch_up is not None and not active.catch_up.done():
            await active.hash_moved.wait()

    def hash_trails(self, active: ActiveUpload, start: int, position: int) -> bool:
        """Whether a writer from ``start`` now at ``position`` should wait for the hash.

        Only a writer the hash can follow (one that continues the contiguous prefix) waits,
        and only while the hash trails it by more than :attr:`hash_lag`.
        """
        session = active.session
        if active.hasher is None or session.received.contiguous_end() < start:
            return False
        return position - session.hashed_offset > self.hash_lag

    def _maybe_catch_up(self, active: ActiveUpload) -> None:
        """Hash received bytes from the file, behind the writers.

        Bytes are read back from the page cache they were just written to, each byte once,
        in one worker thread at a time; finishing then hashes only what is left.
        """
        session = active.session
        if not active.hash_is_free or session.state is not UploadState.RECEIVING:
            return
        if session.received.contiguous_end() <= session.hashed_offset:
            return
        active.catch_up = self._spawn(self._catch_up(active))

    async def _catch_up(self, active: ActiveUpload) -> None:
        session, hasher = active.session, active.hasher
        assert hasher is not None
        try:
            while session.state is UploadState.RECEIVING and not active.forgotten:
                start, end = session.hashed_offset, session.received.contiguous_end()
                if end <= start:
                    return
                if not await self._hash_steps(active, hasher, start, end):
                    return
                await self._save(active)
        finally:
            _pulse(active)

    async def _hash_steps(
        self, active: ActiveUpload, hasher: StatefulSha256, start: int, end: int
    ) -> bool:
        """Hash ``[start, end)`` a step at a time, so waiting writers see it move."""
        session = active.session
        for step_start in range(start, end, HASH_STEP):
            step_end = min(end, step_start + HASH_STEP)
            before = hasher.copy()
            try:
                async with self.read_buffers.borrow() as buffer:
                    await asyncio.to_thread(
                        self._hash_stored, session, hasher, step_start, step_end, buffer
                    )
            except (FreightError, OSError) as exc:
                active.hasher = before  # it may have eaten part of the range
                log.info("upload %s: hashing from disk stopped: %s", session.id, exc)
                return False
            if active.forgotten:
                return False
            session.hashed_offset, session.hash_state = step_end, hasher.state()
            _pulse(active)
        return True

    def _hash_stored(
        self,
        session: UploadSession,
        hasher: StatefulSha256,
        start: int,
        end: int,
        buffer: bytearray,
    ) -> None:
        part = self.store.open_part(session)
        try:
            _hash_file_range(part, hasher, start, end, buffer)
        finally:
            part.close()

    def note_written(self, active: ActiveUpload, size: int) -> None:
        """Called by writers as bytes reach the file, for counters and live progress."""
        active.bytes_written += size
        self.bytes_written_total += size
        now = self.clock()
        if now - active.last_progress >= self.progress_interval:
            self._publish(UploadEventKind.PROGRESS, active)

    def _publish(self, kind: UploadEventKind, active: ActiveUpload) -> None:
        active.last_progress = self.clock()
        self._publish_session(kind, active.session, active.transferred)

    def _publish_session(self, kind: UploadEventKind, session: UploadSession, moved: int) -> None:
        received = session.received.total()
        self.events.publish(
            UploadEvent(
                kind=kind,
                upload_id=session.id,
                name=session.name,
                size=session.length,
                received=received,
                transferred=max(moved, received),
                at=self.clock(),
                sha256=session.sha256,
            )
        )

    async def _save(
        self,
        active: ActiveUpload,
        *,
        added: tuple[int, int] | None = None,
        apply: bool = False,
        **changes: Any,
    ) -> None:
        """Save the session with ``changes`` and the ``added`` byte range.

        Saves of one upload go in order; each writes a snapshot so the loop may go on.
        ``apply`` makes the changes in memory too, once saved, under the same lock, so two
        recordings of one upload never lose each other's ranges.
        """
        async with active.save_lock:
            session = active.session
            received = session.received.copy()
            if added is not None:
                received.add(*added)
            snapshot = dataclasses.replace(
                session, received=received, metadata=dict(session.metadata), **changes
            )
            await asyncio.to_thread(self.store.save, snapshot)
            if apply:
                if added is not None:
                    session.received.add(*added)
                for name, value in changes.items():
                    setattr(session, name, value)

    # finishing ---------------------------------------------------------------------------

    async def finish(self, upload_id: str, *, expected_sha256: str | None = None) -> UploadSession:
        """Verify the upload is complete, settle its SHA-256 and turn it into a file."""
        active = await self._activate(upload_id)
        session = active.session
        if session.state is UploadState.FINISHED:
            _check_expected(session.sha256, expected_sha256)
            return session
        if not session.is_complete:
            missing = session.received.missing(session.length or 0)
            raise UploadIncomplete(
                "the upload is missing bytes", missing=[list(gap) for gap in missing]
            )
        claim = active.claim(0, _EVERYTHING)
        try:
            if active.catch_up is not None:
                with contextlib.suppress(Exception):
                    await active.catch_up
            digest = None
            if self.hash_uploads or expected_sha256 is not None:
                digest = await self._settle_hash(active)
            _check_expected(digest, expected_sha256)
            if active.part is not None:
                active.part.close()
                active.part = None
            finished = dataclasses.replace(
                session,
                sha256=digest,
                state=UploadState.FINISHED,
                finished=self.clock(),
                expires=None,
            )
            await asyncio.to_thread(self.store.finish, finished)
            # Only once the file and its row exist does anyone see the upload as finished.
            active.session = session = finished
            self._publish(UploadEventKind.FINISHED, active)
            log.info(
                "upload finished",
                extra=_fields(upload_id=upload_id, size=finished.length, sha256=digest),
            )
        finally:
            active.unclaim(claim)
            self._release(upload_id, active)
        if session.concat_kind is ConcatKind.PARTIAL:
            self._spawn(self._assemble_waiting_finals(session.id))
        return session

    async def _settle_hash(self, active: ActiveUpload) -> str:
        """The upload's SHA-256; a read buffer is waited for only if bytes must be read."""
        session = active.session
        if active.hasher is not None and session.hashed_offset >= (session.length or 0):
            return await asyncio.to_thread(self._hash_remaining, active, None)
        async with self.read_buffers.borrow() as buffer:
            return await asyncio.to_thread(self._hash_remaining, active, buffer)

    def _hash_remaining(self, active: ActiveUpload, buffer: bytearray | None) -> str:
        """Bring the running SHA-256 to the end of the upload, reading only unhashed bytes."""
        session = active.session
        length = session.length or 0
        hasher = active.hasher
        if hasher is None:
            hasher, session.hashed_offset = new_sha256(), 0
        if session.hashed_offset < length:
            assert buffer is not None, "reading needs a buffer"
            part = active.part or self.store.open_part(session)
            try:
                _hash_file_range(part, hasher, session.hashed_offset, length, buffer)
            finally:
                if part is not active.part:
                    part.close()
        session.hashed_offset = length
        session.hash_state = hasher.state()
        active.hasher = hasher
        return hasher.hexdigest()

    # concatenation -----------------------------------------------------------------------

    async def _assemble_waiting_finals(self, part_id: str) -> None:
        for session in await self.list_sessions():
            if session.state is UploadState.ASSEMBLING and part_id in session.concat_parts:
                try:
                    parts = [await self.get(pid) for pid in session.concat_parts]
                except FreightError:
                    continue
                if all(p.is_finished for p in parts):
                    await self._assemble_or_refuse(session.id)

    async def _assemble_or_refuse(self, final_id: str) -> None:
        try:
            await self._assemble(final_id)
        except UploadTooLarge as exc:
            log.warning("final upload %s is refused: %s", final_id, exc)
            await self.delete(final_id)  # its parts are free again
        except InsufficientStorage as exc:
            log.warning("final upload %s waits for disk space: %s", final_id, exc)

    async def _assemble(self, final_id: str) -> None:
        """Copy the finished parts, in order, into the final upload and finish it."""
        active = await self._activate(final_id)
        final = active.session
        if final.state is not UploadState.ASSEMBLING or active.claims:
            return  # another task is assembling it, or already did
        claim = active.claim(0, _EVERYTHING)
        try:
            parts = [await self.get(pid) for pid in final.concat_parts]
            total = sum(p.length or 0 for p in parts)
            if final.length is None:
                self._check_size(total)  # its parts' lengths were not all known before
                final.length = total
                await asyncio.to_thread(self.store.reserve, final)
            async with self.read_buffers.borrow() as buffer:
                hasher = await asyncio.to_thread(self._copy_parts, final, parts, buffer)
            final.received.add(0, total)
            final.hashed_offset, final.hash_state = total, hasher.state()
            active.hasher = hasher
            final.state = UploadState.RECEIVING
        finally:
            active.unclaim(claim)
        await self.finish(final_id)
        await self._retire_parts(parts)

    async def _retire_parts(self, parts: Sequence[UploadSession]) -> None:
        """Let used parts expire after a grace period instead of deleting them at once.

        A client whose final-creation response was lost retries it, and that must still
        find its parts; the sweeper frees their space afterwards.
        """
        expires = self.clock() + min(self.expire_after, CONSUMED_PART_GRACE)
        for part in parts:
            active = await self._activate(part.id)
            active.session.expires = expires
            await self._save(active)

    def _copy_parts(
        self, final: UploadSession, parts: Sequence[UploadSession], buffer: bytearray
    ) -> StatefulSha256:
        hasher = new_sha256()
        target = self.store.open_part(final)
        position = 0
        try:
            for part in parts:
                source = self.store.open_file(part.id)
                try:
                    position = _copy_hashing(source, target, hasher, buffer, position)
                finally:
                    source.close()
            if self.fsync is not FsyncPolicy.NEVER:
                target.sync()
        finally:
            target.close()
        return hasher

    # deleting and expiry -----------------------------------------------------------------

    async def delete(self, upload_id: str) -> None:
        active = self._active.get(upload_id)
        if active is None:
            session = await asyncio.to_thread(self.store.load, upload_id)  # or UploadNotFound
        elif active.claims:
            raise UploadLocked("the upload is being written; try again when that ends")
        else:
            session = active.session
            await _stop_hashing(active)
        await asyncio.to_thread(self.store.delete, upload_id)
        self._forget(session)
        log.info("upload deleted", extra=_fields(upload_id=upload_id, size=session.length))

    def _forget(self, session: UploadSession) -> None:
        self._active.pop(session.id, None)
        self._publish_session(UploadEventKind.DELETED, session, 0)

    async def sweep_expired(self) -> int:
        """Delete unfinished uploads past their expiry; returns how many went."""
        removed = 0
        for upload_id in await asyncio.to_thread(self.store.expired_ids, self.clock()):
            active = self._active.get(upload_id)
            if active is not None and active.claims:
                continue
            try:
                session = active.session if active else self.store.load(upload_id)
            except UploadNotFound:
                continue
            if active is not None:
                await _stop_hashing(active)
            await asyncio.to_thread(self.store.delete, upload_id)
            self._forget(session)
            removed += 1
            received = session.received.total()
            log.info(
                "upload expired",
                extra=_fields(upload_id=upload_id, size=session.length, received=received),
            )
        if removed:
            log.info("swept %d expired uploads", removed)
        return removed

    async def run_sweeper(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.sweep_expired()
                await self.finish_pending_work()
            except Exception:
                log.exception("sweeping expired uploads failed")

    async def resume_interrupted_work(self) -> None:
        """After a restart: finish complete uploads and assemble ready concatenations."""
        await self.finish_pending_work(limit=None)

    async def finish_pending_work(self, *, limit: int | None = WORK_BATCH) -> int:
        """Finish complete uploads nobody finished, and assemble concatenations whose parts
        are all finished; returns how many went further.

        A client may never ask again: its finishing failed (a full disk) after its bytes
        were recorded, or its answer was lost and a tus client that sees the whole offset
        stops. An upload in use, or written in the last :data:`FINISH_GRACE` seconds, is
        left to its client.
        """
        ids = await asyncio.to_thread(self.store.work_ids, limit or (1 << 62))
        done, failures = 0, 0
        last_error: FreightError | None = None
        for upload_id in ids:
            active = self._active.get(upload_id)
            if active is not None and (
                active.claims or self.clock() - active.last_progress < FINISH_GRACE
            ):
                continue
            try:
                done += await self._take_further(await self.get(upload_id))
            except FreightError as exc:
                failures, last_error = failures + 1, exc
        if last_error is not None:
            # One line per round, whatever the number of uploads stuck the same way.
            log.warning("could not finish %d complete uploads: %s", failures, last_error)
        return done

    async def _take_further(self, session: UploadSession) -> bool:
        if session.state is UploadState.RECEIVING and session.is_complete:
            await self.finish(session.id, expected_sha256=session.declared_sha256)
            return True
        if session.state is UploadState.ASSEMBLING:
            parts = [await self.get(pid) for pid in session.concat_parts]
            if all(p.is_finished for p in parts):
                await self._assemble_or_refuse(session.id)
                return True
        return False

    def open_file(self, session: UploadSession) -> PartFile:
        if not session.is_finished:
            raise UploadIncomplete("the upload is not finished yet")
        return self.store.open_file(session.id)

    def _spawn(self, work: Coroutine[object, object, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background_done)
        return task

    def _background_done(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background work failed", exc_info=task.exception())

    async def interrupt_writers(self) -> None:
        """End every request writing an upload and wait (a while) for them to let go.

        For a shutdown: each keeps what reached its file, synced and recorded, as after a
        dropped connection, and its client resumes from there; waiting instead for a slow
        client to finish could take as long as that client likes.
        """
        await _interrupt([claim for a in self._active.values() for claim in a.claims])

    async def close(self) -> None:
        await self.interrupt_writers()
        for task in list(self._background):
            with contextlib.suppress(BaseException):
                await task
        for active in self._active.values():
            # A part still claimed is left open: closing it under its writer would have the
            # writer sync a closed file, and lose what it was about to record.
            if active.part is not None and not active.claims:
                active.part.close()
                active.part = None
        self._active.clear()
        await asyncio.to_thread(self.store.close)


async def _interrupt(claims: Sequence[Claim]) -> None:
    """End the requests holding ``claims`` and wait (a while) for them to let go."""
    for claim in claims:
        if claim.interrupt is not None:
            claim.interrupt()
    waits = [asyncio.ensure_future(claim.released.wait()) for claim in claims]
    if not waits:
        return
    _, pending = await asyncio.wait(waits, timeout=TAKE_OVER_WAIT)
    for wait in pending:
        wait.cancel()


def _fields(**fields: object) -> dict[str, dict[str, object]]:
    """``extra=`` for a log line whose fields the server's formatters print as such."""
    return {"fields": fields}


def _check_offset(session: UploadSession, offset: int) -> None:
    if offset != session.offset:
        raise OffsetMismatch(
            f"the upload is at offset {session.offset}, not {offset}", offset=session.offset
        )


def _close_opened(opening: asyncio.Future[PartFile]) -> None:
    """Close a part file whose opener was cancelled before it could use it."""
    if not opening.cancelled() and opening.exception() is None:
        opening.result().close()


def _pulse(active: ActiveUpload) -> None:
    """Wake whoever waits for the hash to move (see :meth:`UploadEngine.hash_progress`)."""
    moved, active.hash_moved = active.hash_moved, asyncio.Event()
    moved.set()


async def _stop_hashing(active: ActiveUpload) -> None:
    """Let a running catch-up end without saving, before the upload's rows go."""
    active.forgotten = True
    if active.catch_up is not None:
        with contextlib.suppress(Exception):
            await active.catch_up


def _restore_hasher(session: UploadSession) -> StatefulSha256 | None:
    if session.hash_state is not None:
        restored = sha256_from_state(session.hash_state)
        if restored is not None:
            return restored
    if session.hashed_offset == 0:
        return new_sha256()
    # The saved state cannot be used here; the hash is rebuilt from disk at finish.
    session.hashed_offset = 0
    return new_sha256()


def _check_expected(digest: str | None, expected: str | None) -> None:
    if expected is not None and digest is not None and digest != expected.lower():
        raise ChecksumMismatch(
            f"the upload's SHA-256 is {digest}, not the expected {expected.lower()}",
            sha256=digest,
        )


def _hash_file_range(
    part: PartFile, hasher: StatefulSha256, start: int, end: int, buffer: bytearray
) -> None:
    view = memoryview(buffer)
    position = start
    while position < end:
        got = part.read_into(position, view[: min(len(view), end - position)])
        if got <= 0:
            raise UploadIncomplete(f"upload data ends early at byte {position}")
        hasher.update(view[:got])
        position += got


def _copy_hashing(
    source: PartFile,
    target: PartFile,
    hasher: StatefulSha256,
    buffer: bytearray,
    position: int,
) -> int:
    view = memoryview(buffer)
    offset = 0
    while True:
        got = source.read_into(offset, view)
        if got <= 0:
            return position
        chunk = view[:got]
        hasher.update(chunk)
        target.write_at(position, chunk)
        offset += got
        position += got
