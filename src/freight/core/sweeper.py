"""Background work nobody asked for: expiry, and uploads left complete but unfinished.

The sweeper deletes unfinished uploads past their expiry, finishes complete uploads whose
client never finished them (left alone :data:`FINISH_GRACE` seconds), and assembles finals
whose parts are all finished; after a restart it does the same for every upload at once.
An upload a request is writing is never touched.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from freight.core.active import ActiveUploads
from freight.core.events import log_fields
from freight.core.hash_follower import stop_hashing
from freight.core.hooks import HookEvent, Hooks
from freight.core.ports import ClaimRegistry, Leadership, OutboxEntry, SessionRepository
from freight.core.session import UploadSession, UploadState
from freight.errors import FreightError, UploadNotFound

__all__ = ["FINISH_GRACE", "WORK_BATCH", "Sweeper", "SweeperHost"]

# The engine's log lines keep the engine's logger, whichever of its modules writes them.
log = logging.getLogger("freight.core.engine")

# The sweeper finishes a complete upload nobody finished once it was left alone this long
# (its client normally finishes it at once, maybe with a digest to check).
FINISH_GRACE = 5.0
# Uploads the sweeper takes further per round.
WORK_BATCH = 100


class SweeperHost(Protocol):
    """What the sweeper uses of the engine (:class:`~freight.core.engine.UploadEngine`)."""

    @property
    def sessions(self) -> SessionRepository: ...

    @property
    def claims(self) -> ClaimRegistry: ...

    @property
    def leadership(self) -> Leadership: ...

    @property
    def clock(self) -> Callable[[], float]: ...

    @property
    def uploads(self) -> ActiveUploads: ...

    @property
    def hooks(self) -> Hooks: ...

    async def get(self, upload_id: str) -> UploadSession: ...

    async def finish(
        self, upload_id: str, *, expected_sha256: str | None = None
    ) -> UploadSession: ...

    def forget(self, session: UploadSession) -> None: ...

    async def drop_stored(self, upload_id: str, outbox: Sequence[OutboxEntry] = ()) -> None: ...


class Sweeper:
    """Expires, finishes and assembles what its clients left behind."""

    def __init__(self, host: SweeperHost, assemble: Callable[[str], Awaitable[None]]) -> None:
        self._host = host
        self._assemble = assemble  # assembles a final, or refuses it

    async def sweep_expired(self) -> int:
        """Delete unfinished uploads past their expiry; returns how many went."""
        host = self._host
        removed = 0
        for upload_id in await host.sessions.expired_ids(host.clock()):
            active = host.uploads.get(upload_id)
            if await host.claims.held(upload_id):
                continue
            try:
                session = active.session if active else await host.sessions.load(upload_id)
            except UploadNotFound:
                continue
            if active is not None:
                await stop_hashing(active)
            # The post-expire hook is written with the record's deletion: it is not lost.
            await host.drop_stored(
                upload_id, host.hooks.outbox(HookEvent.POST_EXPIRE, session, host.clock())
            )
            host.forget(session)
            removed += 1
            received = session.received.total()
            log.info(
                "upload expired",
                extra=log_fields(upload_id=upload_id, size=session.length, received=received),
            )
        if removed:
            log.info("swept %d expired uploads", removed)
        return removed

    async def run(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                if await self._host.leadership.is_leader():  # one node of a fleet sweeps
                    await self.sweep_expired()
                    await self.finish_pending_work()
            except FreightError as exc:
                log.warning("sweeping expired uploads failed: %s", exc)
            except Exception:
                log.exception("sweeping expired uploads failed")

    async def finish_pending_work(self, *, limit: int | None = WORK_BATCH) -> int:
        """Finish complete uploads nobody finished, and assemble concatenations whose parts
        are all finished; returns how many went further.

        A client may never ask again: its finishing failed (a full disk) after its bytes
        were recorded, or its answer was lost and a tus client that sees the whole offset
        stops. An upload in use, or written in the last :data:`FINISH_GRACE` seconds, is
        left to its client.
        """
        host = self._host
        ids = await host.sessions.work_ids(limit or (1 << 62))
        done, failures = 0, 0
        last_error: FreightError | None = None
        for upload_id in ids:
            active = host.uploads.get(upload_id)
            if await host.claims.held(upload_id) or (
                active is not None and host.clock() - active.last_progress < FINISH_GRACE
            ):
                continue
            try:
                done += await self._take_further(await host.get(upload_id))
            except FreightError as exc:
                failures, last_error = failures + 1, exc
        if last_error is not None:
            # One line per round, whatever the number of uploads stuck the same way.
            log.warning("could not finish %d complete uploads: %s", failures, last_error)
        return done

    async def _take_further(self, session: UploadSession) -> bool:
        if session.state is UploadState.RECEIVING and session.is_complete:
            await self._host.finish(session.id, expected_sha256=session.declared_sha256)
            return True
        if session.state is UploadState.ASSEMBLING:
            parts = [await self._host.get(pid) for pid in session.concat_parts]
            if all(p.is_finished for p in parts):
                await self._assemble(session.id)
                return True
        return False
