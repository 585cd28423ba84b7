"""Users, their tokens and quotas: the port a user store implements, and the rules.

A user has a name, an optional byte quota and file quota, and may be an admin. A token
belongs to one user; a user has any number, each with an optional expiry and a read-only
flag. A token is ``fr1.<id>.<secret>``: the id finds its record (and names it for
revocation), the secret is kept only as its SHA-256 and compared in constant time, so a
stolen database holds no usable token. The secret has 256 random bits: a plain hash is
enough, there is nothing to brute-force.

The engine never sees any of this: a transport resolves a request to a :class:`Principal`
and hands the engine the owner's name as a plain string.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "ADMIN",
    "NAME_PATTERN",
    "IssuedToken",
    "Principal",
    "TokenRecord",
    "Usage",
    "User",
    "UserRepository",
    "issue_token",
    "parse_token",
    "secret_matches",
    "valid_user_name",
]

NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_PREFIX = "fr1"
_TOKEN_ID = re.compile(r"[0-9a-f]{16}")
_SECRET = re.compile(r"[A-Za-z0-9_-]{43}")


def valid_user_name(name: str) -> bool:
    return NAME_PATTERN.fullmatch(name) is not None


@dataclass(frozen=True)
class User:
    name: str
    admin: bool = False
    byte_quota: int | None = None  # None: no quota
    file_quota: int | None = None
    created: float = 0.0


@dataclass(frozen=True)
class TokenRecord:
    """A token as stored: never the token itself, only its secret's SHA-256."""

    id: str
    user: str
    digest: bytes
    created: float
    expires: float | None = None
    read_only: bool = False

    def expired(self, now: float) -> bool:
        return self.expires is not None and self.expires <= now


@dataclass(frozen=True)
class IssuedToken:
    """A new token: ``plain`` is shown once and never stored."""

    plain: str
    record: TokenRecord


@dataclass(frozen=True)
class Usage:
    """What a user's uploads take: finished files' sizes plus unfinished uploads' declared
    lengths, and how many of them there are."""

    bytes: int
    files: int


@dataclass(frozen=True)
class Principal:
    """Who a request acts for. ``name`` None is the server's own admin (its ``--token``, or
    anyone when the server has neither a token nor users)."""

    name: str | None
    admin: bool
    read_only: bool = False

    def may_see(self, owner: str | None) -> bool:
        """Whether uploads owned by ``owner`` exist for this principal (None: nobody's,
        visible to admins only)."""
        return self.admin or (owner is not None and owner == self.name)

    @property
    def owner(self) -> str | None:
        """The owner a new upload gets: the user, or nobody for the server's admin."""
        return self.name


ADMIN = Principal(name=None, admin=True)


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("ascii")).digest()


def issue_token(
    user: str, now: float, *, expires: float | None = None, read_only: bool = False
) -> IssuedToken:
    token_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    record = TokenRecord(token_id, user, _digest(secret), now, expires, read_only)
    return IssuedToken(f"{_PREFIX}.{token_id}.{secret}", record)


def parse_token(plain: str) -> tuple[str, str] | None:
    """``(id, secret)`` of a user token's text, or None if it is not one."""
    prefix, _, rest = plain.partition(".")
    token_id, _, secret = rest.partition(".")
    if prefix != _PREFIX or not _TOKEN_ID.fullmatch(token_id) or not _SECRET.fullmatch(secret):
        return None
    return token_id, secret


def secret_matches(record: TokenRecord, secret: str) -> bool:
    return hmac.compare_digest(record.digest, _digest(secret))


class UserRepository(Protocol):
    """Users and tokens, kept beside the session records (same database). Every method
    reads the store: nothing is cached, so a revoked token stops working at once on every
    node that shares the store."""

    async def add_user(self, user: User) -> None:
        """Raise :class:`freight.errors.UserExists` if the name is taken."""

    async def get_user(self, name: str) -> User | None: ...

    async def list_users(self) -> list[User]: ...

    async def set_quota(self, name: str, byte_quota: int | None, file_quota: int | None) -> bool:
        """Change a user's quotas; False for an unknown user."""

    async def remove_user(self, name: str) -> bool:
        """Forget the user and every token of theirs; False if there was none."""

    async def has_users(self) -> bool: ...

    async def add_token(self, record: TokenRecord) -> None: ...

    async def find_token(self, token_id: str) -> TokenRecord | None: ...

    async def list_tokens(self, user: str) -> list[TokenRecord]: ...

    async def revoke_token(self, token_id: str) -> bool:
        """Forget one token; False if there was none."""

    async def revoke_tokens(self, user: str) -> int:
        """Forget every token of ``user``; how many there were."""

    async def usage(self, owner: str, now: float) -> Usage:
        """Unexpired uploads owned by ``owner`` (concatenation parts used by a final one
        count through it)."""

    async def link_key(self) -> bytes:
        """A random key made once per store, for signing download links when the server
        has no ``--token``."""

    def admitting(self, owner: str) -> AbstractAsyncContextManager[None]:
        """Held while one of ``owner``'s uploads is checked against the quotas and
        created, so two creations at once (on any node sharing the store) cannot both fit
        in what is left. A single-process store may yield at once: the caller also
        serialises creations per owner within its process."""

    async def close(self) -> None: ...
