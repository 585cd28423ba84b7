"""Who a request acts for, and what that lets it see: one gate for every transport.

Every transport (HTTP middleware, the WebSocket opening, the TCP HELLO) hands what the
client presented to :meth:`Gate.identify` and gets a :class:`~freight.core.users.Principal`:

- the server's own ``--token``: the admin (as before users existed);
- a user's token (``fr1.<id>.<secret>``), unexpired: that user, admin if the user is one,
  read-only if the token is;
- nothing, on a server with neither a token nor users: the admin (a local server stays
  open); anything else is 401.

Nothing is cached: each call reads the user store, so a revoked or rotated token is
refused from the next request on, on every node sharing the store.

Every route that names an upload calls :func:`check_owner` (HTTP routes through the
middleware, once per request): another user's upload answers exactly as one that does not
exist, 404, so ids cannot be probed. New uploads go through :meth:`Gate.creating`, which
refuses read-only tokens and holds the owner to their quotas.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import time
from collections.abc import AsyncIterator, Callable, Sequence

from aiohttp import web

from freight.core.ports import SessionRepository
from freight.core.session import UploadSession
from freight.core.users import ADMIN, Principal, UserRepository, parse_token, secret_matches
from freight.errors import QuotaExceeded, Unauthorized, UploadForbidden, UploadNotFound

__all__ = [
    "GATE",
    "LINK_PRINCIPAL",
    "PRINCIPAL",
    "Gate",
    "check_owner",
    "check_visible",
    "listing_owner",
    "principal_of",
]

_NEEDS_TOKEN = "a valid 'Authorization: Bearer <token>' header is required"
_READ_ONLY = "this token is read-only: it may not create, change or delete uploads"

LINK_PRINCIPAL = Principal(name=None, admin=True, read_only=True)
"""A signed link's bearer: the one file the link names (checked before this is given)."""


class Gate:
    """Resolves credentials to principals, and admits new uploads against quotas."""

    def __init__(
        self,
        admin_token: str | None,
        users: UserRepository | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._admin = admin_token.encode("utf-8", "surrogateescape") if admin_token else None
        self.users = users  # set when the application starts (the store may be remote)
        self._clock = clock
        # One creation at a time per owner in this process, so two uploads created at
        # once cannot both fit in what is left of one quota.
        self._creating: dict[str, asyncio.Lock] = {}
        self._link_key: bytes | None = None

    async def identify(self, presented: bytes | None) -> Principal:
        """The principal ``presented`` (a token's bytes; None: nothing) stands for."""
        if presented and self._admin is not None and hmac.compare_digest(presented, self._admin):
            return ADMIN
        if presented:
            user = await self._user_token(presented)
            if user is not None:
                return user
        if self._admin is None and not await self._has_users():
            return ADMIN  # nothing to check against: open, as without users
        raise Unauthorized(_NEEDS_TOKEN)

    async def _has_users(self) -> bool:
        return self.users is not None and await self.users.has_users()

    async def _user_token(self, presented: bytes) -> Principal | None:
        if self.users is None:
            return None
        try:
            parsed = parse_token(presented.decode("ascii"))
        except UnicodeDecodeError:
            return None
        if parsed is None:
            return None
        token_id, secret = parsed
        record = await self.users.find_token(token_id)
        if record is None or record.expired(self._clock()) or not secret_matches(record, secret):
            return None
        user = await self.users.get_user(record.user)
        if user is None:
            return None
        return Principal(name=user.name, admin=user.admin, read_only=record.read_only)

    async def wants_token(self) -> bool:
        """Whether a request without a token is refused (the server is not open)."""
        return self._admin is not None or await self._has_users()

    async def link_key(self) -> bytes | None:
        """What signs download links: the server's token, else the store's random key; None
        for an open server (no token, no users), whose links need no signature."""
        if self._admin is not None:
            return self._admin
        if not await self._has_users():
            return None
        if self._link_key is None:
            assert self.users is not None
            self._link_key = await self.users.link_key()
        return self._link_key

    @contextlib.asynccontextmanager
    async def creating(self, principal: Principal, length: int | None) -> AsyncIterator[None]:
        """Around creating an upload of ``length`` bytes (None: not declared yet) for
        ``principal``: refuses read-only tokens and what would break the owner's quotas."""
        if principal.read_only:
            raise UploadForbidden(_READ_ONLY)
        name = principal.name
        if name is None or self.users is None:
            yield
            return
        lock = self._creating.setdefault(name, asyncio.Lock())
        async with lock, self.users.admitting(name):
            await self._check_quota(name, length)
            yield

    async def may_use(
        self, principal: Principal, upload_ids: Sequence[str], sessions: SessionRepository
    ) -> None:
        """Refuse a read-only token, and uploads ``principal`` may not see (a final
        concatenation's parts), as if they did not exist."""
        if principal.read_only:
            raise UploadForbidden(_READ_ONLY)
        for upload_id in upload_ids:
            await check_visible(principal, sessions, upload_id)

    async def _check_quota(self, name: str, length: int | None) -> None:
        assert self.users is not None
        user = await self.users.get_user(name)
        if user is None:
            raise Unauthorized("this user no longer exists")
        if user.byte_quota is None and user.file_quota is None:
            return
        usage = await self.users.usage(name, self._clock())
        if user.file_quota is not None and usage.files + 1 > user.file_quota:
            raise QuotaExceeded(
                f"user {name!r} already has {usage.files} of {user.file_quota} files;"
                " delete some first",
                used_files=usage.files,
                file_quota=user.file_quota,
            )
        if user.byte_quota is None:
            return
        if length is None:
            # A deferred length would be counted only once declared, after its bytes came.
            raise QuotaExceeded(
                f"user {name!r} has a byte quota: declare the upload's length when creating it",
                byte_quota=user.byte_quota,
            )
        if usage.bytes + length > user.byte_quota:
            raise QuotaExceeded(
                f"{length} more bytes would take user {name!r} over their quota"
                f" ({usage.bytes} of {user.byte_quota} bytes used)",
                used_bytes=usage.bytes,
                byte_quota=user.byte_quota,
            )


def listing_owner(principal: Principal) -> str | None:
    """Whose uploads a listing shows ``principal``: everyone's (None) for an admin."""
    return None if principal.admin else principal.name


_NOT_FOUND = "no such upload"


def check_owner(principal: Principal, session: UploadSession) -> UploadSession:
    """``session`` if ``principal`` may see it; otherwise it does not exist for them."""
    if not principal.may_see(session.owner):
        raise UploadNotFound(_NOT_FOUND)
    return session


async def check_visible(principal: Principal, sessions: SessionRepository, upload_id: str) -> None:
    """Raise UploadNotFound unless ``principal`` may see upload ``upload_id``; the error is
    the same, word for word, for an id nobody has and one of another user's.

    Reads the stored record, not the engine's view: another user's expired upload must be
    404 too, never 410. Owners never change, so the record is never stale for this.
    """
    if principal.admin:
        return
    try:
        session = await sessions.load(upload_id)
    except UploadNotFound:
        raise UploadNotFound(_NOT_FOUND) from None
    check_owner(principal, session)


PRINCIPAL: web.RequestKey[Principal] = web.RequestKey("freight.principal")
GATE = web.AppKey("freight.gate", Gate)


def principal_of(request: web.Request) -> Principal:
    """The principal the auth middleware resolved for ``request``."""
    principal: Principal | None = request.get(PRINCIPAL)
    if principal is None:  # a route the middleware did not see: never let it act as admin
        raise Unauthorized(_NEEDS_TOKEN)
    return principal
