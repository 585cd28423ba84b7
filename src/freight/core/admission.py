"""Which new uploads (and lengths declared later) the server takes: caps and disk space.

Space is promised, not preallocated: what unfinished uploads still need (declared minus
received bytes) counts as taken, and a new upload must fit in what is left of the free
space, above a reserve. Counts and space are capped in all and per client address, so one
client cannot hold the disk or the session table for everyone else. Messages never say how
much is free: that is the operator's business, not a client's.
"""

from __future__ import annotations

from dataclasses import dataclass

from freight.core.blobs import BlobStore
from freight.core.ports import SessionRepository
from freight.errors import (
    InsufficientStorage,
    TooManyUploads,
    UploadCapacityReached,
    UploadTooLarge,
)

__all__ = ["Admission"]


@dataclass(frozen=True)
class Admission:
    """The limits; None means no cap."""

    max_size: int | None = None
    disk_reserve: int = 0
    max_unfinished: int | None = None
    max_unfinished_per_client: int | None = None
    # The share of the space free for uploads that one client's unfinished uploads may claim.
    client_space_share: float = 1.0

    async def check_size(self, blobs: BlobStore, length: int) -> None:
        """Raise if one upload of ``length`` bytes is too large, alone."""
        if self.max_size is not None and length > self.max_size:
            raise UploadTooLarge(
                f"{length} bytes is more than this server accepts ({self.max_size})",
                max_size=self.max_size,
            )
        free = await blobs.free_bytes()
        if free is not None and length > free - self.disk_reserve:
            raise InsufficientStorage("the server does not have the disk space for this upload")

    async def check(
        self,
        sessions: SessionRepository,
        blobs: BlobStore,
        now: float,
        needed: int,
        client: str | None,
        *,
        new: bool,
    ) -> None:
        """Raise if an upload needing ``needed`` more bytes may not go on.

        ``new``: a new upload, held to the count caps; otherwise one already counted.
        """
        totals = await sessions.unfinished_totals(now)
        if new and self.max_unfinished is not None and totals.count >= self.max_unfinished:
            raise UploadCapacityReached(
                "the server holds as many unfinished uploads as it takes; try again later"
            )
        mine = await sessions.unfinished_totals(now, client) if client is not None else None
        cap = self.max_unfinished_per_client
        if new and mine is not None and cap is not None and mine.count >= cap:
            raise TooManyUploads(
                f"this client already has {cap} unfinished uploads, the most it may; "
                "finish or delete some first"
            )
        if needed <= 0:
            return  # nothing declared yet: the length is checked once it is
        free = await blobs.free_bytes()
        if free is None:
            return  # a store without a visible limit (an object store)
        usable = free - self.disk_reserve
        if needed + totals.pending_bytes > usable:
            raise InsufficientStorage("the server does not have the disk space for this upload")
        if mine is not None and needed + mine.pending_bytes > usable * self.client_space_share:
            raise InsufficientStorage(
                "with this client's other unfinished uploads, this one would claim more of "
                "the server's disk than one client may"
            )
