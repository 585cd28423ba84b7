"""Opening writers: who may write which bytes of an upload, from where, and take-overs.

A writer claims the byte range it will write (:mod:`freight.core.claims`); a sequential
writer (tus, IETF) claims everything from its offset, which must be the upload's current
offset. A request that brings an ``interrupt`` takes over the bytes a stalled request
still claims instead of being locked out until that one times out. A deferred length is
declared here too, since it must not change under a writer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Protocol

from freight.core.active import ActiveUploads
from freight.core.active_upload import ActiveUpload, persist
from freight.core.claims import EVERYTHING
from freight.core.ports import ClaimRegistry, SessionRepository
from freight.core.session import ConcatKind, UploadSession, UploadState
from freight.core.writer import RequestChecksum, UploadWriter
from freight.core.writer_host import WriterHost
from freight.errors import (
    LengthMismatch,
    OffsetMismatch,
    RangeAlreadyReceived,
    UploadForbidden,
    UploadLocked,
)

__all__ = ["Writing", "WritingHost", "check_offset", "check_writable"]


class WritingHost(WriterHost, Protocol):
    """What opening writers uses of the engine (:class:`~freight.core.engine.UploadEngine`)."""

    @property
    def sessions(self) -> SessionRepository: ...

    @property
    def claims(self) -> ClaimRegistry: ...

    @property
    def max_size(self) -> int | None: ...

    @property
    def uploads(self) -> ActiveUploads: ...

    @property
    def admitting(self) -> asyncio.Lock: ...

    async def activate(self, upload_id: str) -> ActiveUpload: ...

    async def check_size(self, length: int) -> None: ...

    async def admit(self, needed: int, client: str | None, *, new: bool) -> None: ...


class Writing:
    """Opens writers on uploads and fixes deferred lengths, taking stalled requests over."""

    def __init__(self, host: WritingHost) -> None:
        self._host = host

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
        host = self._host
        active = await host.activate(upload_id)
        if await host.claims.held(upload_id) and interrupt is not None and offset is not None:
            active = await self._take_over(active, offset, EVERYTHING, offset, True)
        session = active.session
        if await host.claims.held(upload_id):
            raise UploadLocked("the length cannot change while the upload is being written")
        if session.length is not None:
            if session.length != length:
                raise LengthMismatch(f"the upload's length is already {session.length}")
            return session
        if length < session.received.highest():
            raise LengthMismatch(f"{session.received.highest()} bytes were already received")
        await host.check_size(length)
        needed = length - session.received.total()
        async with host.admitting:
            await host.admit(needed, session.client, new=False)
            # In memory only once it is recorded: a failed save must leave no trace.
            await persist(host.sessions, active, length=length)
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
        hash_inline: bool = True,
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

        ``hash_inline=False`` leaves the upload's running hash to read this writer's bytes
        back from the store where it can, instead of taking them from its buffers.
        """
        if offset is None and not sequential:
            raise ValueError("only a sequential writer may start at the current offset")
        host = self._host
        active = await host.activate(upload_id)
        claimed_end = end if end is not None else EVERYTHING
        if interrupt is not None:
            # A sequential request takes over only from the current offset: a stale one
            # would cut a healthy request off and be refused all the same. What the old
            # request wrote from that offset on is the newer one's to write again.
            rewrites = offset if sequential else None
            active = await self._take_over(active, offset or 0, claimed_end, rewrites, sequential)
        session = active.session
        if offset is None:
            offset = session.offset
        check_writable(session, offset, sequential)
        if not sequential and session.received.overlaps(offset, end or EVERYTHING):
            raise RangeAlreadyReceived(f"bytes from {offset} were already received")
        limit = session.length if session.length is not None else host.max_size
        holding: list[UploadWriter] = []

        def let_go(rewrites: int | None) -> None:
            if rewrites is not None:
                for writer in holding:
                    writer.yield_from(rewrites)
            if interrupt is not None:
                interrupt()

        claim = await host.claims.claim(
            upload_id, offset, claimed_end, let_go if interrupt else None
        )
        try:
            if sequential:
                check_offset(session, offset)
            part = await host.uploads.shared_part(active)
            bound = min(end, limit) if end is not None and limit is not None else end or limit
            writer = UploadWriter(
                host,
                active,
                part,
                offset,
                bound,
                checksum,
                all_or_nothing=all_or_nothing,
                fence=claim,
                hash_inline=hash_inline,
            )
            holding.append(writer)
            active.writers.add(writer)
            try:
                yield writer
            finally:
                await writer.abort()
                writer.release_buffers()
                active.writers.discard(writer)
        finally:
            await host.claims.release(claim)
            host.uploads.release(active)

    async def _take_over(
        self, active: ActiveUpload, start: int, end: int, rewrites: int | None, sequential: bool
    ) -> ActiveUpload:
        """Take ``[start, end)`` over from the requests writing it (checking ``rewrites``
        first: a stale offset is refused rather than cutting a healthy request off)."""
        if rewrites is not None:
            check_writable(active.session, rewrites, sequential)
            check_offset(active.session, rewrites)
        upload_id = active.session.id
        if not await self._host.claims.take_over(upload_id, start, end, rewrites):
            return active
        active = await self._host.activate(upload_id)  # it may have been dropped
        # What the requests let go of kept was recorded as they left, perhaps by another
        # node: this node's copy of the session learns of it only from the repository.
        stored = await self._host.sessions.load(upload_id)
        for have_start, have_end in stored.received:
            active.session.received.add(have_start, have_end)
        return active


def check_writable(session: UploadSession, offset: int, sequential: bool) -> None:
    """Refuse writing ``session`` from ``offset`` if its state or length forbid it."""
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


def check_offset(session: UploadSession, offset: int) -> None:
    """Refuse a sequential write from anywhere but the upload's current offset."""
    if offset != session.offset:
        raise OffsetMismatch(
            f"the upload is at offset {session.offset}, not {offset}", offset=session.offset
        )
