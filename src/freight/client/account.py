"""Who the token stands for on a server, and their usage against quota (``/api/me``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from freight.client.http import Timeouts, open_session
from freight.client.urls import split_file_url

__all__ = ["Account", "fetch_account"]


@dataclass(frozen=True)
class Account:
    """A user's account; ``*_quota`` None means no quota."""

    user: str
    read_only: bool
    used_bytes: int
    used_files: int
    byte_quota: int | None
    file_quota: int | None


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _account(data: Any) -> Account | None:
    if not isinstance(data, dict) or not isinstance(data.get("user"), str):
        return None
    usage: dict[str, Any] = data["usage"] if isinstance(data.get("usage"), dict) else {}
    quota: dict[str, Any] = data["quota"] if isinstance(data.get("quota"), dict) else {}
    return Account(
        user=data["user"],
        read_only=data.get("read_only") is True,
        used_bytes=_count(usage.get("bytes")) or 0,
        used_files=_count(usage.get("files")) or 0,
        byte_quota=_count(quota.get("bytes")),
        file_quota=_count(quota.get("files")),
    )


async def fetch_account(
    server_url: str, *, token: str | None = None, timeouts: Timeouts | None = None
) -> Account | None:
    """The user ``token`` belongs to; None for the server's own token, an open server or a
    server that predates users (it has no ``/api/me``)."""
    root = split_file_url(server_url)[0]
    url = root.with_path(root.path.rstrip("/") + "/api/me")
    async with open_session(token, timeouts=timeouts) as session, session.get(url) as resp:
        if resp.status != 200:
            return None
        try:
            return _account(await resp.json(content_type=None))
        except ValueError:
            return None
