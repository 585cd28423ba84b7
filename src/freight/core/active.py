"""The engine's in-memory cache of uploads being written or written lately.

An upload takes memory only once a request touches it: :meth:`ActiveUploads.activate`
loads it (restoring its running hash), and once nobody claims it any more its blob writer
is closed and the longest idle beyond :data:`IDLE_CACHE` are dropped. What is in memory is
newer than the repository, so listings show it instead of the stored record. Where other
nodes write the same uploads (``keep_idle=False``) an upload is kept only while written here:
an idle copy would go stale as soon as another node takes the upload on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from freight.core.active_upload import ActiveUpload
from freight.core.blobs import BlobStore, BlobWriter
from freight.core.hash_follower import HashFollower
from freight.core.ports import ClaimRegistry, SessionRepository
from freight.core.session import UploadSession, UploadState
from freight.errors import UploadExpired

__all__ = ["IDLE_CACHE", "ActiveUploads", "check_not_expired"]

# Idle uploads kept in memory (most recently used); those being written are always kept.
IDLE_CACHE = 256


class ActiveUploads:
    """Uploads in memory by id, most recently used last."""

    def __init__(
        self,
        sessions: SessionRepository,
        blobs: BlobStore,
        claims: ClaimRegistry,
        hashing: HashFollower,
        *,
        keep_idle: bool = True,
    ) -> None:
        self.sessions = sessions
        self.idle_cache = IDLE_CACHE if keep_idle else 0
        self.blobs = blobs
        self.claims = claims
        self.hashing = hashing
        self.by_id: dict[str, ActiveUpload] = {}

    def get(self, upload_id: str) -> ActiveUpload | None:
        return self.by_id.get(upload_id)

    async def activate(self, upload_id: str) -> ActiveUpload:
        """The upload in memory, loaded if it is not (the caller checks its expiry)."""
        active = self.by_id.get(upload_id)
        if active is None:
            session = await self.sessions.load(upload_id)
            active = self.by_id.get(upload_id)
            if active is None:  # else another call activated it meanwhile, and may hash
                active = self.by_id[upload_id] = ActiveUpload(session, None)
                self.hashing.restore(active)
        else:
            # Most recently used last, so eviction drops the longest idle.
            self.by_id[upload_id] = self.by_id.pop(upload_id)
        return active

    def track(self, session: UploadSession) -> ActiveUpload:
        """Keep a session created here in memory, with a fresh running hash."""
        active = self.by_id[session.id] = ActiveUpload(session, None)
        self.hashing.restore(active)
        return active

    def forget(self, upload_id: str) -> None:
        self.by_id.pop(upload_id, None)

    async def shared_part(self, active: ActiveUpload) -> BlobWriter:
        """The upload's open blob writer, shared by all its writers; the first opens it.

        Writers of other ranges (parallel chunks) can get here together: a copy opened
        while another writer was opening one is closed at once, or it would stay open
        for good and pin the blob's space even after the upload is deleted.
        """
        if active.part is None:
            opening = asyncio.ensure_future(self.blobs.open_writer(active.session.id))
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

    def release(self, active: ActiveUpload) -> None:
        """Once nobody claims ``active``: close its blob writer, drop the longest idle."""
        if self.claims.held_here(active.session.id):
            return
        if active.part is not None:
            active.part.close()
            active.part = None
        idle = [key for key in self.by_id if not self.claims.held_here(key)]
        for key in idle[: max(0, len(idle) - self.idle_cache)]:
            del self.by_id[key]

    def overlay(self, stored: Iterable[UploadSession]) -> list[UploadSession]:
        """``stored`` sessions, each replaced by the newer one in memory if there is one."""
        return [self.by_id[s.id].session if s.id in self.by_id else s for s in stored]

    def transfers(self, limit: int, now: float) -> list[UploadSession]:
        """Unexpired unfinished uploads in memory, at most ``limit``, latest first."""
        sessions = [
            a.session
            for a in reversed(self.by_id.values())
            if a.session.state is not UploadState.FINISHED
            and (a.session.expires is None or a.session.expires >= now)
        ]
        return sessions[:limit]

    def being_written(self) -> int:
        return sum(1 for active in self.by_id.values() if active.writers)

    def close(self) -> None:
        for upload_id, active in self.by_id.items():
            # A writer still claimed is left open: closing it under its request would have
            # the request sync a closed blob, and lose what it was about to record.
            if active.part is not None and not self.claims.held_here(upload_id):
                active.part.close()
                active.part = None
        self.by_id.clear()


def check_not_expired(session: UploadSession, now: float) -> None:
    # Finished files carry no expiry; used concatenation parts do, for a grace period.
    if session.expires is not None and session.expires < now:
        raise UploadExpired("this upload expired and is being deleted")


def _close_opened(opening: asyncio.Future[BlobWriter]) -> None:
    """Close a blob writer whose opener was cancelled before it could use it."""
    if not opening.cancelled() and opening.exception() is None:
        opening.result().close()
