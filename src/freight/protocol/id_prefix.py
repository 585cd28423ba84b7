"""Which stored file a typed id prefix names (``freight get 3fa9c1d2``, as ``freight ls``
shows ids), the same for every transport: the client completes it from a listing over HTTP,
the TCP server from its own records (the TCP protocol lists nothing)."""

from __future__ import annotations

from collections.abc import Iterable

from freight.errors import AmbiguousId

__all__ = ["FULL_ID_LENGTH", "match_prefix"]

FULL_ID_LENGTH = 32  # a server's ids: 24 random bytes, URL-safe base64
_SHOWN_CANDIDATES = 10


def match_prefix(given: str, ids: Iterable[str]) -> str | None:
    """The id ``given`` names: itself if listed, else the one id it starts; None if none
    does; :class:`~freight.errors.AmbiguousId`, naming the candidates, if several do."""
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
