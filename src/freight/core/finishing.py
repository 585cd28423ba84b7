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

    def __init__(self, host: FinishingHost) -> None:
        self._host = host

    async def finish(self, upload_id: str, *, expected_sha256: str | None = None) -> UploadSession:
        """Verify the upload is complete, finish its blob, settle its SHA-256 and record it
        as finished (compare and set: of two finishing it, one records it).

        A ``pre-finish`` hook that refuses it terminates it (see :meth:`_terminate`) and
        its refusal is raised."""
        try:
            return await self._finish(upload_id, expected_sha256)
        except HookRejected as refusal:
            await self._terminate(upload_id, refusal)
            raise

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
