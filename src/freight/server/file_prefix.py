"""Completing a typed id prefix on the server, for a transport that cannot list files.

Over HTTP the client completes a prefix (``freight get http://host/files/3fa9c1d2``) from
``GET /api/files``; the raw TCP protocol lists nothing, so its server completes the id of a
``GET`` the same way, from the same listing the principal would see, with the same rules
(:mod:`freight.protocol.id_prefix`) and the same error naming the candidates.
"""

from __future__ import annotations

from freight.core import UploadEngine
from freight.core.ports import PageKey
from freight.core.users import Principal
from freight.protocol.id_prefix import FULL_ID_LENGTH, match_prefix
from freight.server.principals import listing_owner

__all__ = ["complete_file_id"]

_PAGE = 1000


async def complete_file_id(engine: UploadEngine, principal: Principal, given: str) -> str:
    """The id ``given`` names for ``principal``: itself when whole or listed, else the one
    finished file visible to them whose id it starts; ``given`` unchanged if none does
    (the caller's lookup then says "no such upload"). Costs a listing, as over HTTP, so
    only ids shorter than a server's are looked up."""
    if len(given) >= FULL_ID_LENGTH or not given:
        return given  # whole: no listing needed
    owner = listing_owner(principal)
    ids: list[str] = []
    after: PageKey | None = None
    while True:
        page, more = await engine.list_page("files", after, _PAGE, owner)
        ids += (session.id for session in page if session.id.startswith(given))
        if not more or not page:
            break
        after = (page[-1].created, page[-1].id)
    return match_prefix(given, ids) or given
