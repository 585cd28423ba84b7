"""Final concatenations: which partial uploads a final owns, and assembling it.

A partial upload belongs to one final at most: each final copies its parts, so finals
sharing parts would let a client have the server write any multiple of what it sent. A
final is assembled (``assembling`` → ``finished``) once every part is finished, by copying
the parts in order into it while hashing them; the parts then expire after a grace period
(:data:`CONSUMED_PART_GRACE`) rather than at once, so a client retrying a lost answer still
finds them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from freight.config import FsyncPolicy
from freight.core.active import ActiveUploads
from freight.core.active_upload import ActiveUpload, persist, record
from freight.core.blobs import BlobReader, BlobStore, BlobWriter, ServerConcat
from freight.core.buffers import ReadBuffers
from freight.core.claims import EVERYTHING
from freight.core.events import UploadEventKind
from freight.core.hashing import StatefulSha256, new_sha256
from freight.core.ports import ClaimRegistry, SessionRepository
from freight.core.session import ConcatKind, UploadSession, UploadState, new_upload_id
from freight.errors import (
    ConcatenationError,
    FreightError,
    HookRejected,
    HookUnavailable,
    InsufficientStorage,
    UploadExpired,
    UploadNotFound,
    UploadTooLarge,
)

__all__ = ["CONSUMED_PART_GRACE", "ConcatHost", "Concatenator"]

# The engine's log lines keep the engine's logger, whichever of its modules writes them.
log = logging.getLogger("freight.core.engine")

# How long a part used by a finished final stays (for a client retrying a lost answer).
CONSUMED_PART_GRACE = 600.0


class ConcatHost(Protocol):
    """What concatenation uses of the engine (:class:`~freight.core.engine.UploadEngine`)."""

    @property
    def sessions(self) -> SessionRepository: ...

    @property
    def blobs(self) -> BlobStore: ...

    @property
    def claims(self) -> ClaimRegistry: ...

    @property
    def clock(self) -> Callable[[], float]: ...

    @property
    def expire_after(self) -> float: ...

    @property
    def fsync(self) -> FsyncPolicy: ...

    @property
    def read_buffers(self) -> ReadBuffers: ...

    async def get(self, upload_id: str) -> UploadSession: ...

    async def activate(self, upload_id: str) -> ActiveUpload: ...

    @property
    def uploads(self) -> ActiveUploads: ...

    async def check_size(self, length: int) -> None: ...

    async def store_new(self, session: UploadSession) -> None: ...

    def publish(self, kind: UploadEventKind, active: ActiveUpload) -> None: ...

    async def list_sessions(self) -> list[UploadSession]: ...

    async def finish(
        self, upload_id: str, *, expected_sha256: str | None = None
    ) -> UploadSession: ...

    async def delete(self, upload_id: str) -> None: ...


class Concatenator:
    """Creates finals from partial uploads and assembles them once their parts are done."""

    def __init__(self, host: ConcatHost) -> None:
        self._host = host
        self._lock = asyncio.Lock()

    async def create_final(
        self,
        part_ids: Sequence[str],
        metadata: Mapping[str, str | None],
        owner: str | None = None,
    ) -> UploadSession:
        """Create a final concatenation; it is assembled once every part is finished.

        The same list again (a client whose answer was lost retries) gets the final those
        parts already belong to; a part whose final was deleted is free again.
        """
        host = self._host
        if not part_ids:
            raise ConcatenationError("a final concatenation needs at least one partial upload")
        if len(set(part_ids)) != len(part_ids):
            raise ConcatenationError("a partial upload may appear only once in a concatenation")
        # Held from checking the parts' owners to recording the new one: two finals
        # created at once must not both find a part free.
        async with self._lock:
            parts = [await self._load_part(part_id) for part_id in part_ids]
            existing = await self._final_owning(parts)
            if existing is not None:
                return existing
            known = sum(p.length or 0 for p in parts)
            await host.check_size(known)  # the final is a copy: as large again as its parts
            total = None if any(p.length is None for p in parts) else known
            now = host.clock()
            session = UploadSession(
                id=new_upload_id(),
                length=total,
                metadata=dict(metadata),
                created=now,
                expires=now + host.expire_after,
                state=UploadState.ASSEMBLING,
                concat_kind=ConcatKind.FINAL,
                concat_parts=tuple(part_ids),
                owner=owner,
            )
            # Parts first: one owned by a final that never came to be is free again.
            for part in parts:
                owned = await host.activate(part.id)
                await persist(host.sessions, owned, used_by=session.id)
            await host.store_new(session)
            host.publish(UploadEventKind.CREATED, host.uploads.track(session))
        if all(p.is_finished for p in parts):
            await self._assemble(session.id)
        return await host.get(session.id)

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
            final = await self._host.get(final_id)
        except (UploadNotFound, UploadExpired):
            return None
        return final if final.concat_kind is ConcatKind.FINAL else None

    async def _load_part(self, part_id: str) -> UploadSession:
        try:
            part = await self._host.get(part_id)
        except (UploadNotFound, UploadExpired) as exc:
            raise ConcatenationError(f"partial upload {part_id} does not exist") from exc
        if part.concat_kind is not ConcatKind.PARTIAL:
            raise ConcatenationError(f"upload {part_id} is not a partial upload")
        return part

    async def assemble_waiting_finals(self, part_id: str) -> None:
        """Assemble the finals waiting for ``part_id`` whose parts are now all finished."""
        for session in await self._host.list_sessions():
            if session.state is UploadState.ASSEMBLING and part_id in session.concat_parts:
                try:
                    parts = [await self._host.get(pid) for pid in session.concat_parts]
                except FreightError:
                    continue
                if all(p.is_finished for p in parts):
                    await self.assemble_or_refuse(session.id)

    async def assemble_or_refuse(self, final_id: str) -> None:
        try:
            await self._assemble(final_id)
        except UploadTooLarge as exc:
            log.warning("final upload %s is refused: %s", final_id, exc)
            await self._host.delete(final_id)  # its parts are free again
        except InsufficientStorage as exc:
            log.warning("final upload %s waits for disk space: %s", final_id, exc)
        except (HookRejected, HookUnavailable) as exc:  # refused: terminated; else: retried
            log.warning("final upload %s: %s", final_id, exc)

    async def _assemble(self, final_id: str) -> None:
        """Copy the finished parts, in order, into the final upload and finish it."""
        host = self._host
        active = await host.activate(final_id)
        final = active.session
        if final.state is not UploadState.ASSEMBLING or await host.claims.held(final_id):
            return  # another task is assembling it, or already did
        claim = await host.claims.claim(final_id, 0, EVERYTHING)
        try:
            parts = [await host.get(pid) for pid in final.concat_parts]
            total = sum(p.length or 0 for p in parts)
            if final.length is None:
                await host.check_size(total)  # its parts' lengths were not all known before
            hashed, hasher = await self._fill(final, parts)
            await record(host.sessions, active, 0, total, final.expires)
            active.inline = None
            active.hasher = hasher
            # Compare and set: of two assembling the same final, one goes on to finish it.
            if not await persist(
                host.sessions,
                active,
                expect=UploadState.ASSEMBLING,
                length=total,
                hashed_offset=hashed,
                hash_state=hasher.state() if hasher else None,
                state=UploadState.RECEIVING,
            ):
                return
        finally:
            await host.claims.release(claim)
        await host.finish(final_id)
        await self._retire_parts(parts)

    async def _fill(
        self, final: UploadSession, parts: Sequence[UploadSession]
    ) -> tuple[int, StatefulSha256 | None]:
        """Put the parts' bytes in the final's blob; returns how far they were hashed."""
        blobs = self._host.blobs
        if isinstance(blobs, ServerConcat):
            await blobs.concatenate(final.id, [part.id for part in parts])
            return 0, None  # the store copied them: finishing reads them once to hash
        target = await blobs.open_writer(final.id)
        try:
            readers = [await blobs.open_reader(part.id) for part in parts]
            try:
                async with self._host.read_buffers.borrow() as buffer:
                    hasher = await asyncio.to_thread(self._copy_parts, readers, target, buffer)
            finally:
                for reader in readers:
                    reader.close()
        finally:
            target.close()
        return sum(p.length or 0 for p in parts), hasher

    async def _retire_parts(self, parts: Sequence[UploadSession]) -> None:
        """Let used parts expire after a grace period instead of deleting them at once.

        A client whose final-creation response was lost retries it, and that must still
        find its parts; the sweeper frees their space afterwards.
        """
        host = self._host
        expires = host.clock() + min(host.expire_after, CONSUMED_PART_GRACE)
        for part in parts:
            active = await host.activate(part.id)
            await persist(host.sessions, active, expires=expires)

    def _copy_parts(
        self, readers: Sequence[BlobReader], target: BlobWriter, buffer: bytearray
    ) -> StatefulSha256:
        hasher = new_sha256()
        position = 0
        for source in readers:
            position = _copy_hashing(source, target, hasher, buffer, position)
        if self._host.fsync is not FsyncPolicy.NEVER:
            target.sync()
        return hasher


def _copy_hashing(
    source: BlobReader,
    target: BlobWriter,
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
