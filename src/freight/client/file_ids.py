"""Short file ids: the shortest prefix telling each id apart from the others listed, and
finding the one id a typed prefix names."""

from __future__ import annotations

from collections.abc import Iterable

from freight import errors
from freight.client.errors import ClientError
from freight.protocol.id_prefix import FULL_ID_LENGTH
from freight.protocol.id_prefix import match_prefix as _match_prefix

__all__ = ["FULL_ID_LENGTH", "MIN_PREFIX", "AmbiguousId", "match_prefix", "short_ids"]

MIN_PREFIX = 8  # 48 random bits: short, and unlikely to need more as files come and go


class AmbiguousId(ClientError):
    """A typed id prefix matches several stored files (over TCP the server says so, with
    :class:`freight.errors.AmbiguousId`'s code and message)."""

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
    try:
        return _match_prefix(given, ids)
    except errors.AmbiguousId as exc:
        raise AmbiguousId(exc.message) from None
