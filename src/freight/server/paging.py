"""Paged listings: ``?limit=&cursor=`` in, a page and the cursor of the next one out.

A cursor is opaque to clients: the last entry's creation time and id, so a page starts
where the previous one ended even while entries come and go.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass

from freight.core import UploadSession
from freight.core.ports import PageKey
from freight.errors import BadRequest

__all__ = ["DEFAULT_PAGE", "MAX_PAGE", "PageRequest", "next_cursor", "parse_page_request"]

DEFAULT_PAGE = 100
MAX_PAGE = 1000
_MAX_CURSOR = 512


@dataclass(frozen=True)
class PageRequest:
    limit: int
    after: PageKey | None


def parse_page_request(query: Mapping[str, str]) -> PageRequest:
    raw_limit = query.get("limit")
    limit = DEFAULT_PAGE
    if raw_limit is not None:
        if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_PAGE:
            raise BadRequest(f"limit must be a whole number from 1 to {MAX_PAGE}")
        limit = int(raw_limit)
    cursor = query.get("cursor")
    return PageRequest(limit, _decode(cursor) if cursor else None)


def next_cursor(page: list[UploadSession], more: bool) -> str | None:
    if not more or not page:
        return None
    last = page[-1]
    raw = f"{last.created!r} {last.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(cursor: str) -> PageKey:
    try:
        if len(cursor) > _MAX_CURSOR:
            raise ValueError("too long")
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, upload_id = raw.split(" ", 1)
        return float(created), upload_id
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise BadRequest("cursor is not one this server gave") from exc
