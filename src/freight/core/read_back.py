"""Reading recorded bytes back from a store for the running SHA-256 (worker threads).

:func:`follow_stored` moves the upload's shared :class:`InlineHash` on from where it
stands, a read buffer at a time, and stops where a writer fed it meanwhile;
:func:`hash_file_range` hashes a range into a hash of its own (finishing).
"""

from __future__ import annotations

from collections.abc import Iterator

from freight.core.blobs import BlobReader
from freight.core.hashing import StatefulSha256
from freight.core.inline_hash import InlineHash
from freight.errors import ChecksumMismatch, UploadIncomplete

__all__ = ["Run", "check_expected", "follow_stored", "hash_file_range"]


class Run:
    """One worker thread's catch-up: the event loop moves ``end`` on as bytes are recorded,
    and sets ``stopped`` to end it early."""

    def __init__(self, upload_id: str, end: int) -> None:
        self.upload_id = upload_id
        self.end = end
        self.stopped = False
        self.followed = 0  # bytes read back and hashed (counted in the thread)


def follow_stored(
    part: BlobReader, inline: InlineHash, start: int, end: int, buffer: bytearray, run: Run
) -> bool:
    """Hash ``[start, end)`` read back into ``inline``; False where it moved meanwhile."""
    for position, piece in _read_back(part, start, end, buffer):
        if not inline.follow(position, piece):
            return False
        run.followed += len(piece)
    return True


def hash_file_range(
    part: BlobReader, hasher: StatefulSha256, start: int, end: int, buffer: bytearray
) -> None:
    for _, piece in _read_back(part, start, end, buffer):
        hasher.update(piece)


def _read_back(
    part: BlobReader, start: int, end: int, buffer: bytearray
) -> Iterator[tuple[int, memoryview]]:
    """``[start, end)`` through ``buffer``, a read at a time: (its offset, its bytes)."""
    view = memoryview(buffer)
    position = start
    while position < end:
        got = part.read_into(position, view[: min(len(view), end - position)])
        if got <= 0:
            raise UploadIncomplete(f"upload data ends early at byte {position}")
        yield position, view[:got]
        position += got


def check_expected(digest: str | None, expected: str | None) -> None:
    """Refuse a digest other than the one a client declared (if it declared one)."""
    if expected is not None and digest is not None and digest != expected.lower():
        raise ChecksumMismatch(
            f"the upload's SHA-256 is {digest}, not the expected {expected.lower()}",
            sha256=digest,
        )
