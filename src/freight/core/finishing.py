"""Finishing an upload: from complete bytes to a finished blob with its SHA-256.

Finishing claims the whole upload (no request may write it meanwhile), finishes the blob
(a rename, a multipart completion), settles the running SHA-256 and checks it against one
the client declared, then records the upload as finished with a compare-and-set on its
state: of two nodes finishing one upload, one records it and the other reads the result.
Where the store reads back cheaply, the digest is settled from the unfinished blob first,
so a mismatch leaves the upload as it was.

Hooks (:mod:`freight.core.hooks`): ``pre-finish`` is asked just before the blob is
finished (with the digest where it is settled by then); a refusal terminates the upload.
The ``post-finish`` entry is written by the compare-and-set that records it as finished.

Finishing in the background (:meth:`Finishing.finish` with ``digest_needed=False``): when
nothing needs the digest before the answer (no digest declared to check, no ``pre-finish``
hook, a store that reads back cheaply on one node), the caller gets the complete upload
at once and the finish goes on in a task. Until it ends the upload is "complete,
finishing": :meth:`Finishing.settled` lets every read wait for it (bounded), so no read
sees it half finished. A crash meanwhile leaves a complete upload in ``receiving`` with
its saved hash state, which the restart finishes (``resume_interrupted_work``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Coroutine
from typing import Protocol

from freight.core.active import ActiveUploads
from freight.core.active_upload import ActiveUpload, persist
from freight.core.blobs import BlobStore
from freight.core.claims import EVERYTHING
from freight.core.concat import Concatenator
from freight.core.events import UploadEventKind, log_fields
from freight.core.hash_follower import HashFollower, check_expected
from freight.core.hooks import HookEvent, Hooks
from freight.core.ports import ClaimRegistry, SessionRepository
from freight.core.session import ConcatKind, UploadSession, UploadState
from freight.errors import FreightError, HookRejected, UploadIncomplete

__all__ = ["Finishing", "FinishingHost"]

# The engine's log lines keep the engine's logger, whichever of its modules writes them.
log = logging.getLogger("freight.core.engine")


class FinishingHost(Protocol):
    """What finishing uses of the engine (:class:`~freight.core.engine.UploadEngine`)."""

    @property
    def sessions(self) -> SessionRepository: ...

    @property
    def blobs(self) -> BlobStore: ...

    @property
    def claims(self) -> ClaimRegistry: ...

    @property
    def uploads(self) -> ActiveUploads: ...

    @property
    def hash_follower(self) -> HashFollower: ...

    @property
    def concat(self) -> Concatenator: ...

    @property
    def hash_uploads(self) -> bool: ...

    @property
    def clock(self) -> Callable[[], float]: ...

    @property
    def hooks(self) -> Hooks: ...

    async def delete(self, upload_id: str, *, reason: str | None = None) -> None: ...

    async def activate(self, upload_id: str) -> ActiveUpload: ...

    def publish(self, kind: UploadEventKind, active: ActiveUpload) -> None: ...

    def _spawn(self, work: Coroutine[object, object, None]) -> asyncio.Task[None]: ...


class Finishing:
    """Finishes uploads for the engine."""

    def __init__(self, host: FinishingHost, *, in_background: bool) -> None:
        self._host = host
        # Whether finishing may go on after the answer at all (one node, a store that
        # reads back cheaply): elsewhere another node could not wait for it.
        self._in_background = in_background
        self._under_way: dict[str, asyncio.Task[None]] = {}

    async def finish(
        self,
        upload_id: str,
        *,
        expected_sha256: str | None = None,
        digest_needed: bool = True,
    ) -> UploadSession:
        """Verify the upload is complete, finish its blob, settle its SHA-256 and record it
        as finished (compare and set: of two finishing it, one records it).

        A ``pre-finish`` hook that refuses it terminates it (see :meth:`_terminate`) and
        its refusal is raised.

        Without ``digest_needed`` (the caller answers without the digest), a finish that
        nothing else waits for goes on in the background: the complete, unfinished
        session is returned at once (see :meth:`under_way`)."""
        if upload_id in self._under_way:
            await self.settled(upload_id, None)
        elif not digest_needed and expected_sha256 is None:
            session = await self._start_in_background(upload_id)
            if session is not None:
                return session
        try:
            return await self._finish(upload_id, expected_sha256)
        except HookRejected as refusal:
            await self._terminate(upload_id, refusal)
            raise

    def under_way(self, upload_id: str) -> bool:
        """Whether the upload is being finished in the background ("complete, finishing")."""
        return upload_id in self._under_way

    async def settled(self, upload_id: str, timeout: float | None) -> None:
        """Wait (at most ``timeout`` seconds) for a finish under way in the background."""
        task = self._under_way.get(upload_id)
        if task is not None:
            await asyncio.wait([task], timeout=timeout)

    async def all_settled(self, timeout: float | None) -> None:
        """Wait (at most ``timeout`` seconds) for every finish under way now."""
        if self._under_way:
            await asyncio.wait(list(self._under_way.values()), timeout=timeout)

    async def _start_in_background(self, upload_id: str) -> UploadSession | None:
        """The complete session, its finish started in a task; None where the finish must
        be awaited (it needs the digest, or is not due)."""
        host = self._host
        if not self._in_background or host.hooks.wants(HookEvent.PRE_FINISH):
            return None
        active = await host.activate(upload_id)
        session = active.session
        can_wait = (
            session.state is UploadState.RECEIVING
            and session.is_complete
            and session.declared_sha256 is None
            and session.concat_kind is not ConcatKind.FINAL
        )
        if not can_wait or upload_id in self._under_way:
            return None
        task = host._spawn(self._finish_in_background(upload_id))
        self._under_way[upload_id] = task
        task.add_done_callback(lambda _: self._forget_task(upload_id, task))
        # A copy: the finish replaces the live session, and the caller answers with this one.
        return dataclasses.replace(session, received=session.received.copy())

    def _forget_task(self, upload_id: str, task: asyncio.Task[None]) -> None:
        if self._under_way.get(upload_id) is task:
            del self._under_way[upload_id]

    async def _finish_in_background(self, upload_id: str) -> None:
        try:
            await self._finish(upload_id, None)
        except (FreightError, OSError) as exc:  # left complete: the sweeper finishes it later
            log.warning(
                "finishing in the background failed: %s",
                exc,
                extra=log_fields(upload_id=upload_id),
            )

    async def _terminate(self, upload_id: str, refusal: HookRejected) -> None:
        """Delete an upload ``pre-finish`` refused (once its claim is released): its bytes
        are never published, and its ``post-terminate`` hook gives the reason."""
        try:
            await self._host.delete(upload_id, reason=f"pre-finish: {refusal.message}")
        except FreightError as exc:  # a request took it meanwhile: it expires instead
            log.warning(
                "could not delete an upload pre-finish refused: %s",
                exc,
                extra=log_fields(upload_id=upload_id),
            )

    async def _finish(self, upload_id: str, expected_sha256: str | None) -> UploadSession:
        host = self._host
        active = await host.activate(upload_id)
        session = active.session
        if session.state is UploadState.FINISHED:
            check_expected(session.sha256, expected_sha256)
            return session
        if not session.is_complete:
            missing = session.received.missing(session.length or 0)
            raise UploadIncomplete(
                "the upload is missing bytes", missing=[list(gap) for gap in missing]
            )
        claim = await host.claims.claim(upload_id, 0, EVERYTHING)
        try:
            if active.part is not None:
                active.part.close()
                active.part = None
            reads_back = host.hash_follower.read_back is not None
            if not reads_back:
                await self._ask_pre_finish(session, None)
                await host.blobs.finish(upload_id, session.length or 0)
            digest = await host.hash_follower.final_digest(
                active, expected_sha256, always=host.hash_uploads
            )
            if reads_back:  # hashed what was left from the part: finish it once it checks
                await self._ask_pre_finish(session, digest)
                await host.blobs.finish(upload_id, session.length or 0)
            finished = dataclasses.replace(
                session, sha256=digest, state=UploadState.FINISHED, finished=host.clock()
            )
            finished.expires = None
            done = await self._record_finished(active, finished)
            if not done:
                session = await host.sessions.load(upload_id)  # another node finished it
                check_expected(session.sha256, expected_sha256)
                active.session = session
                return session
            # Only once the blob and its record exist does anyone see it as finished.
            active.session = session = finished
            host.publish(UploadEventKind.FINISHED, active)
            log.info(
                "upload finished",
                extra=log_fields(upload_id=upload_id, size=finished.length, sha256=digest),
            )
        finally:
            await host.claims.release(claim)
            host.uploads.release(active)
        if session.concat_kind is ConcatKind.PARTIAL:
            host._spawn(host.concat.assemble_waiting_finals(session.id))
        return session

    async def _ask_pre_finish(self, session: UploadSession, digest: str | None) -> None:
        hooks = self._host.hooks
        if hooks.wants(HookEvent.PRE_FINISH):
            await hooks.ask(HookEvent.PRE_FINISH, dataclasses.replace(session, sha256=digest))

    async def _record_finished(self, active: ActiveUpload, finished: UploadSession) -> bool:
        fields = ("state", "sha256", "finished", "expires", "hashed_offset", "hash_state")
        changes = {name: getattr(finished, name) for name in fields}
        hooks = self._host.hooks
        outbox = hooks.outbox(HookEvent.POST_FINISH, finished, self._host.clock())
        done = await persist(
            self._host.sessions,
            active,
            expect=UploadState.RECEIVING,
            apply=False,
            outbox=outbox,
            **changes,
        )
        if done and outbox:
            hooks.outbox_written()
        return done
