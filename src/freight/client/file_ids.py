"""Short file ids: the shortest prefix telling each id apart from the others listed, and
finding the one id a typed prefix names."""

from __future__ import annotations

from collections.abc import Iterable

from freight.client.errors import ClientError

__all__ = ["FULL_ID_LENGTH", "MIN_PREFIX", "AmbiguousId", "match_prefix", "short_ids"]

FULL_ID_LENGTH = 32  # a server's ids: 24 random bytes, URL-safe base64
MIN_PREFIX = 8  # 48 random bits: short, and unlikely to need more as files come and go
_SHOWN_CANDIDATES = 10


class AmbiguousId(ClientError):
    """A typed id prefix matches several stored files."""

    code = "ERR_AMBIGUOUS_ID"


def short_ids(ids: Iterable[str], minimum: int = MIN_PREFIX) -> dict[str, str]:
    """Each id's shortest prefix (of at least ``minimum`` characters) that no other id in
    ``ids`` starts with; an id that is another's prefix stays whole."""
    ordered = sorted(set(ids))
    shortest: dict[str, str] = {}
    for index, upload_id in enumerate(ordered):
        shared = 0
        for neighbour in ordered[max(0, index - 1) : index + 2]:
            if neighbour != upload_id:
                shared = max(shared, _common_length(upload_id, neighbour))
        shortest[upload_id] = upload_id[: max(minimum, shared + 1)]
    return shortest


def _common_length(first: str, second: str) -> int:
    for index, (a, b) in enumerate(zip(first, second, strict=False)):
        if a != b:
            return index
    return min(len(first), len(second))


def match_prefix(given: str, ids: Iterable[str]) -> str | None:
    """The id ``given`` names: itself if listed, else the one id it starts; None if none
    does; :class:`AmbiguousId`, naming the candidates, if several do."""
    candidates = sorted({upload_id for upload_id in ids if upload_id.startswith(given)})
    if given in candidates or not candidates:
        return given if candidates else None
    if len(candidates) == 1:
        return candidates[0]
    shown = ", ".join(candidates[:_SHOWN_CANDIDATES])
    more = len(candidates) - _SHOWN_CANDIDATES
    raise AmbiguousId(
        f"{given!r} is the start of {len(candidates)} file ids: {shown}"
        + (f" and {more} more" if more > 0 else "")
        + "; give more of the id"
    )
