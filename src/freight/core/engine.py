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
  through Python) unless the hash falls :attr:`UploadEngine.hash_lag` behind (a bound
  that grows with the memory to spare).
* ``receiving`` → ``finished`` (a final concatenation: ``assembling`` → ``finished``).
  Finishing is a rename; a finished upload never changes again.

:class:`UploadEngine` is the façade; each concern is a module it owns: :mod:`.active`
(uploads in memory), :mod:`.claims` (claims, take-over, ordered saves), :mod:`.writing`
(opening writers), :mod:`.hash_follower` (the running SHA-256), :mod:`.concat`
(concatenation) and :mod:`.sweeper` (expiry, work left behind).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence

from freight.config import FsyncPolicy
from freight.core.active import ActiveUploads, check_not_expired
from freight.core.active_upload import ActiveUpload, record
from freight.core.admission import Admission
from freight.core.blobs import BlobReader
from freight.core.buffers import BufferPool, ReadBuffers
from freight.core.claims import InProcessClaims
from freight.core.concat import Concatenator
from freight.core.events import EventHub, UploadEvent, UploadEventKind, log_fields
from freight.core.finishing import Finishing
from freight.core.hash_follower import HashFollower, stop_hashing
from freight.core.hash_lag import HashLag
from freight.core.hooks import HookEvent, Hooks, NoHooks
from freight.core.ports import (
    Backend,
    ClaimRegistry,
    EventBus,
    HeldClaim,
    ListingKind,
    OutboxEntry,
    PageKey,
)
from freight.core.session import ConcatKind, UploadSession, new_upload_id
from freight.core.sweeper import WORK_BATCH, Sweeper
from freight.core.writer import RequestChecksum, UploadWriter
from freight.core.writing import Writing
from freight.errors import UploadIncomplete, UploadLocked

__all__ = ["ActiveUpload", "UploadEngine"]

log = logging.getLogger(__name__)

# A read of an upload being finished in the background waits at most this long (seconds):
# what is left to hash is bounded (core/hash_lag.py), so this is only reached on a stalled
# disk, and then the read shows the upload complete and not yet finished.
FINISH_WAIT = 60.0


class UploadEngine:
    def __init__(
        self,
        backend: Backend,
        *,
        claims: ClaimRegistry | None = None,
        events: EventBus | None = None,
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
        hooks: Hooks | None = None,
        hook_progress_interval: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.backend = backend
        # Where hook events go (core/hooks.py); post-receive at most this often per upload.
        self.hooks: Hooks = hooks or NoHooks()
        self.hook_progress_interval = hook_progress_interval
        self.sessions = backend.sessions
        self.blobs = backend.blobs
        self.claims: ClaimRegistry = claims or backend.claims or InProcessClaims()
        self.leadership = backend.leadership
        # Off: no running SHA-256; a digest is computed (from disk) only to check one a
        # client declared at finish.
        self.hash_uploads = hash_uploads
        self.fsync = fsync
        self.sync_every = sync_every
        # How far the running hash may trail the bytes written before writers wait for it
        # (see core/hash_lag.py): never less than twice ``sync_every``.
        self.hash_lag = HashLag(2 * sync_every, lambda: self.uploads.being_written())
        self.expire_after = expire_after
        # Until its first byte is recorded an upload goes sooner, never later than others.
        self.expire_unstarted = min(expire_after, expire_unstarted or expire_after)
        self.max_size = max_size
        self.disk_reserve = disk_reserve
        self.admission = Admission(
            max_size=max_size,
            disk_reserve=disk_reserve,
            max_unfinished=max_unfinished,
            max_unfinished_per_client=max_unfinished_per_client,
            client_space_share=client_space_share,
        )
        # Creations are admitted one at a time, so two cannot both take the last room.
        self.admitting = asyncio.Lock()
        self.clock = clock
        self._background: set[asyncio.Task[None]] = set()
        self.events: EventBus = events or backend.events or EventHub()
        self.buffers = BufferPool()
        self.bytes_written_total = 0
        self.progress_interval = 0.25

        self.hash_follower = HashFollower(
            self.sessions, self.blobs, ReadBuffers(), self._spawn, enabled=hash_uploads
        )
        # Other nodes change what this one last saw of an upload nobody here writes: in a
        # fleet (claims shared through the backend) only uploads written here stay in memory.
        shared = backend.claims is not None
        self.uploads = ActiveUploads(
            self.sessions, self.blobs, self.claims, self.hash_follower, keep_idle=not shared
        )
        self.concat = Concatenator(self)
        self.writing = Writing(self)
        # Finishing goes on after the answer only where every read of the upload comes
        # here to wait for it (one node) and the store reads back cheaply.
        background = not shared and self.hash_follower.read_back is not None
        self.finishing = Finishing(self, in_background=background)
        # How long a read waits for a finish under way before it answers with what it has.
        self.finish_wait = FINISH_WAIT
        self.sweeper = Sweeper(self, self.concat.assemble_or_refuse)

    @property
    def read_buffers(self) -> ReadBuffers:
        """The buffers every upload reads back through (hashing, assembling)."""
        return self.hash_follower.read_buffers

    @read_buffers.setter
    def read_buffers(self, buffers: ReadBuffers) -> None:
        self.hash_follower.read_buffers = buffers

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
        owner: str | None = None,
    ) -> UploadSession:
        """Start an upload; ``length=None`` defers the length.

        ``client`` (the peer's address) is held to the per-client caps. ``chunk_size`` and
        ``declared_sha256`` are the creating protocol's own state, kept beside (never in)
        the client's ``metadata``; finishing checks a declared SHA-256. ``owner`` is kept
        as given (who may see the upload is the transport's business). The new upload
        takes no memory and no disk space until bytes arrive, and expires after
        :attr:`expire_unstarted` unless they do.
        """
        if length is not None:
            await self.check_size(length)
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
            owner=owner,
        )
        if self.hooks.wants(HookEvent.PRE_CREATE):  # outside the admission lock: it may wait
            verdict = await self.hooks.ask(HookEvent.PRE_CREATE, session)
            session.metadata.update(verdict.metadata)
        async with self.admitting:
            await self.admit(session.length or 0, session.client, new=True)
            await self.store_new(session)
        self._publish_session(UploadEventKind.CREATED, session, 0)
        self.hooks.tell(HookEvent.POST_CREATE, session)
        return session

    async def store_new(self, session: UploadSession) -> None:
        """The new session's blob, then its record (a blob without one is swept away)."""
        await self.blobs.create(session.id)
        try:
            await self.sessions.create(session)
        except BaseException:
            await self.blobs.delete(session.id)
            raise

    async def admit(self, needed: int, client: str | None, *, new: bool) -> None:
        await self.admission.check(self.sessions, self.blobs, self.clock(), needed, client, new=new)

    async def create_final(
        self,
        part_ids: Sequence[str],
        metadata: Mapping[str, str | None],
        owner: str | None = None,
    ) -> UploadSession:
        """Create a final concatenation (see :mod:`freight.core.concat`)."""
        return await self.concat.create_final(part_ids, metadata, owner)

    async def check_size(self, length: int) -> None:
        await self.admission.check_size(self.blobs, length)

    # reading state -----------------------------------------------------------------------

    async def get(self, upload_id: str) -> UploadSession:
        await self.finishing.settled(upload_id, self.finish_wait)
        active = self.uploads.get(upload_id)
        session = active.session if active else await self.sessions.load(upload_id)
        check_not_expired(session, self.clock())
        return session

    async def list_sessions(self) -> list[UploadSession]:
        """Every session: for start-up work and tests; listings go by :meth:`list_page`."""
        await self.finishes_settled()
        stored = await self.sessions.list_all()
        return self.uploads.overlay(stored)

    async def list_page(
        self, kind: ListingKind, after: PageKey | None, limit: int, owner: str | None = None
    ) -> tuple[list[UploadSession], bool]:
        """Up to ``limit`` sessions of a listing after ``after`` (``owner``'s only, if
        given), and whether more follow; uploads being finished are waited for first."""
        await self.finishes_settled()
        stored = await self.sessions.list_page(kind, after, limit + 1, self.clock(), owner)
        page = self.uploads.overlay(stored)
        return page[:limit], len(page) > limit

    def active_transfers(self, limit: int) -> list[UploadSession]:
        """Unexpired uploads receiving bytes now or lately (at most ``limit``, latest first):
        what a live view needs, from memory, never a scan of every session."""
        return self.uploads.transfers(limit, self.clock())

    @property
    def uploads_being_written(self) -> int:
        """Uploads a request is writing right now; the other unfinished ones are idle."""
        return self.uploads.being_written()

    async def unfinished_count(self) -> int:
        totals = await self.sessions.unfinished_totals(self.clock())
        return totals.count

    async def activate(self, upload_id: str) -> ActiveUpload:
        """The upload in memory (see :class:`ActiveUploads`); refuses one past its expiry."""
        active = await self.uploads.activate(upload_id)
        check_not_expired(active.session, self.clock())
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
        """Fix a deferred length (see :meth:`Writing.declare_length`)."""
        return await self.writing.declare_length(
            upload_id, length, interrupt=interrupt, offset=offset
        )

    def writer(
        self,
        upload_id: str,
        offset: int | None,
        *,
        end: int | None = None,
        sequential: bool = True,
        checksum: RequestChecksum | None = None,
        all_or_nothing: bool = False,
        interrupt: Callable[[], None] | None = None,
        hash_inline: bool = True,
    ) -> contextlib.AbstractAsyncContextManager[UploadWriter]:
        """Write from ``offset``; the caller must ``await writer.commit()`` to keep the bytes
        (see :meth:`Writing.writer`)."""
        return self.writing.writer(
            upload_id,
            offset,
            end=end,
            sequential=sequential,
            checksum=checksum,
            all_or_nothing=all_or_nothing,
            interrupt=interrupt,
            hash_inline=hash_inline,
        )

    async def record_received(
        self, active: ActiveUpload, start: int, end: int, fence: HeldClaim | None = None
    ) -> None:
        """Called by writers once ``[start, end)`` is durable: make it count.

        The bytes count in memory (and so in any offset a client is told) only once the
        record is saved: a save that fails, on a full disk say, leaves the session as the
        store has it.
        """
        expires = self.clock() + self.expire_after
        await record(self.sessions, active, start, end, expires, fence)
        self.publish(UploadEventKind.PROGRESS, active)
        self._tell_progress(active)
        await self.hash_follower.after_record(active, fence, (start, end))

    def _tell_progress(self, active: ActiveUpload) -> None:
        if not self.hooks.wants(HookEvent.POST_RECEIVE):
            return
        now = self.clock()
        if now - active.hook_told >= self.hook_progress_interval:
            active.hook_told = now
            self.hooks.tell(HookEvent.POST_RECEIVE, active.session)

    async def hashed(self, upload_id: str) -> UploadSession:
        """The session once the running hash covers every byte of its contiguous prefix."""
        return await self.hash_follower.caught_up(await self.activate(upload_id))

    async def hash_progress(self, active: ActiveUpload) -> None:
        """Wait for the running hash to take its next step (at once if it is not running)."""
        await self.hash_follower.progress(active)

    def hash_trails(self, active: ActiveUpload, start: int, position: int) -> bool:
        """Whether a writer from ``start`` now at ``position`` should wait for the hash
        (see :meth:`HashFollower.trails`; the bound is :attr:`hash_lag`)."""
        return self.hash_follower.trails(active, start, position, self.hash_lag.bound())

    def hash_joins(self, active: ActiveUpload, position: int) -> bool:
        """Whether a writer about to write at ``position`` should first let the hash
        reach it (see :meth:`HashFollower.joins_at`)."""
        return self.hash_follower.joins_at(active, position)

    async def hash_reach(self, active: ActiveUpload, position: int) -> None:
        """Let the hash read back recorded bytes up to ``position`` (see
        :meth:`HashFollower.reach`)."""
        await self.hash_follower.reach(active, position)

    def note_written(self, active: ActiveUpload, size: int) -> None:
        """Called by writers as bytes reach the file, for counters and live progress."""
        active.bytes_written += size
        self.bytes_written_total += size
        now = self.clock()
        if now - active.last_progress >= self.progress_interval:
            self.publish(UploadEventKind.PROGRESS, active)

    def publish(self, kind: UploadEventKind, active: ActiveUpload) -> None:
        active.last_progress = self.clock()
        self._publish_session(kind, active.session, active.transferred)

    def _publish_session(self, kind: UploadEventKind, session: UploadSession, moved: int) -> None:
        self.events.publish(UploadEvent.of(kind, session, moved, self.clock()))

    # finishing ---------------------------------------------------------------------------

    async def finish(
        self,
        upload_id: str,
        *,
        expected_sha256: str | None = None,
        digest_needed: bool = True,
    ) -> UploadSession:
        """Turn a complete upload into a finished one (see :meth:`Finishing.finish`).

        ``digest_needed=False``: the caller answers without the digest, so the finish may
        go on in the background (the session returned is then complete, not finished:
        see :meth:`finishing_under_way`)."""
        return await self.finishing.finish(
            upload_id, expected_sha256=expected_sha256, digest_needed=digest_needed
        )

    async def finishes_settled(self) -> None:
        """Wait (at most :attr:`finish_wait`) for every finish under way in the background:
        a listing or lookup of finished files then shows the uploads already answered."""
        await self.finishing.all_settled(self.finish_wait)

    def finishing_under_way(self, upload_id: str) -> bool:
        """Whether the upload is complete and being finished in the background."""
        return self.finishing.under_way(upload_id)

    # deleting and expiry -----------------------------------------------------------------

    async def delete(self, upload_id: str, *, reason: str | None = None) -> None:
        """Terminate the upload (a ``post-terminate`` hook, with ``reason`` if given)."""
        await self.finishing.settled(upload_id, self.finish_wait)
        if await self.claims.held(upload_id):
            raise UploadLocked("the upload is being written; try again when that ends")
        active = self.uploads.get(upload_id)
        if active is None:
            session = await self.sessions.load(upload_id)  # or UploadNotFound
        else:
            session = active.session
            await stop_hashing(active)
        outbox = self.hooks.outbox(HookEvent.POST_TERMINATE, session, self.clock(), reason)
        await self.drop_stored(upload_id, outbox)
        self.forget(session)
        log.info("upload deleted", extra=log_fields(upload_id=upload_id, size=session.length))

    async def drop_stored(self, upload_id: str, outbox: Sequence[OutboxEntry] = ()) -> None:
        """The record first (nobody finds the upload any more), then the bytes; ``outbox``
        entries are written with the record's deletion."""
        await self.sessions.delete(upload_id, outbox=outbox)
        if outbox:
            self.hooks.outbox_written()
        await self.blobs.delete(upload_id)

    def forget(self, session: UploadSession) -> None:
        self.uploads.forget(session.id)
        self._publish_session(UploadEventKind.DELETED, session, 0)

    async def sweep_expired(self) -> int:
        """Delete unfinished uploads past their expiry; returns how many went."""
        return await self.sweeper.sweep_expired()

    async def run_sweeper(self, interval: float) -> None:
        await self.sweeper.run(interval)

    async def resume_interrupted_work(self) -> None:
        """After a restart: finish complete uploads and assemble ready concatenations (the
        leading node's work, when there are several)."""
        if await self.leadership.is_leader():
            await self.sweeper.finish_pending_work(limit=None)

    async def finish_pending_work(self, *, limit: int | None = WORK_BATCH) -> int:
        """Finish what clients left complete (see :meth:`Sweeper.finish_pending_work`)."""
        return await self.sweeper.finish_pending_work(limit=limit)

    async def open_reader(self, session: UploadSession) -> BlobReader:
        """Read a finished upload's bytes (a download without ``sendfile``)."""
        if not session.is_finished:
            raise UploadIncomplete("the upload is not finished yet")
        return await self.blobs.open_reader(session.id)

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
        await self.claims.interrupt_all()

    async def close(self) -> None:
        await self.interrupt_writers()
        for task in list(self._background):
            with contextlib.suppress(BaseException):
                await task
        self.uploads.close()
        self.hash_follower.close()
        await self.backend.close()
