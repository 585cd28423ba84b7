"""What freight knows about one upload, and the rules for changing it."""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass, field
from typing import Any

from freight.core.rangeset import RangeSet

__all__ = ["ConcatKind", "UploadSession", "UploadState", "new_upload_id"]

NAME_KEYS = ("filename", "name")


class UploadState(enum.Enum):
    """``receiving`` → ``finished``. A final concatenation waits in ``assembling``.

    A session never goes back; deletion removes it entirely.
    """

    RECEIVING = "receiving"
    ASSEMBLING = "assembling"
    FINISHED = "finished"


class ConcatKind(enum.Enum):
    PARTIAL = "partial"
    FINAL = "final"


def new_upload_id() -> str:
    """192 random bits, URL-safe: unguessable and usable as a file name."""
    return secrets.token_urlsafe(24)


@dataclass
class UploadSession:
    """One upload. ``received`` only ever holds bytes that are durable under the fsync policy.

    ``metadata`` is what the client sent, nothing else: state a protocol keeps about the
    upload has its own field (``chunk_size``, ``declared_sha256``).

    ``hashed_offset`` is how far the running SHA-256 (``hash_state``) has consumed the
    contiguous prefix; it never exceeds ``received.contiguous_end()``.
    """

    id: str
    length: int | None
    metadata: dict[str, str | None]
    created: float
    expires: float | None
    received: RangeSet = field(default_factory=RangeSet)
    state: UploadState = UploadState.RECEIVING
    hashed_offset: int = 0
    hash_state: bytes | None = None
    concat_kind: ConcatKind | None = None
    concat_parts: tuple[str, ...] = ()
    sha256: str | None = None
    finished: float | None = None
    # The address that created it, for per-client caps (None: not from a network client).
    client: str | None = None
    used_by: str | None = None  # a partial upload: the final concatenation it belongs to
    # Set only for uploads created by the chunk API: its chunks are this long.
    chunk_size: int | None = None
    # The SHA-256 (lowercase hex) a client declared at creation; finishing checks it.
    declared_sha256: str | None = None
    # The user whose token created it (None: the server's admin, or an older version's
    # upload): it exists only for that user and admins.
    owner: str | None = None

    @property
    def offset(self) -> int:
        """The tus offset: end of the contiguous prefix from byte 0."""
        return self.received.contiguous_end()

    @property
    def name(self) -> str | None:
        for key in NAME_KEYS:
            value = self.metadata.get(key)
            if value:
                return value
        return None

    @property
    def is_complete(self) -> bool:
        if self.length is None:
            return False
        return self.length == 0 or self.received.covers(0, self.length)

    @property
    def is_finished(self) -> bool:
        return self.state is UploadState.FINISHED

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "size": self.length,
            "received_bytes": self.received.total(),
            "offset": self.offset,
            "state": self.state.value,
            "sha256": self.sha256,
            "created": self.created,
            "expires": self.expires,
        }
