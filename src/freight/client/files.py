"""Listing and deleting the files stored on a server (``/api/files``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
from yarl import URL

from freight.client.errors import ClientError, ProtocolViolation, ServerError
from freight.client.file_ids import FULL_ID_LENGTH, match_prefix, short_ids
from freight.client.http import (
    RetryBudget,
    RetryCallback,
    RetryPolicy,
    Timeouts,
    open_session,
    retrying,
    server_error,
)
from freight.client.urls import api_files_url, split_file_url

__all__ = [
    "RemoteFile",
    "delete_file",
    "find_stored",
    "list_files",
    "resolve_file_url",
    "short_ids",
]

_NO_LISTING = frozenset({404, 405, 501})  # what a server without /api/files answers


@dataclass(frozen=True)
class RemoteFile:
    """One stored file; ``url`` is absolute, ``created`` is None if the server gave none."""

    id: str
    name: str
    size: int
    sha256: str | None
    created: datetime | None
    url: str


async def list_files(
    server_url: str,
    *,
    token: str | None = None,
    retry: RetryPolicy | None = None,
    on_retry: RetryCallback | None = None,
    timeouts: Timeouts | None = None,
) -> list[RemoteFile]:
    """Every finished file on the server at ``server_url`` (any URL of that server).

    The server lists a page at a time; this follows ``next_cursor`` to the last page.
    """
    root = split_file_url(server_url)[0]
    budget = RetryBudget(retry or RetryPolicy(), on_retry)
    files: list[RemoteFile] = []
    cursor: str | None = None
    async with open_session(token, timeouts=timeouts) as session:
        while True:
            url = api_files_url(root)
            page_url = url if cursor is None else url.update_query(cursor=cursor)

            async def fetch(page_url: URL = page_url) -> Any:
                async with session.get(page_url) as resp:
                    if resp.status != 200:
                        raise await server_error(resp, "listing files")
                    try:
                        return await resp.json(content_type=None)
                    except ValueError as exc:
                        raise ProtocolViolation("the file list is not valid JSON") from exc

            data = await retrying(budget, fetch)
            entries = data.get("files") if isinstance(data, dict) else None
            if not isinstance(entries, list):
                raise ProtocolViolation("the file list has no 'files' array")
            files.extend(_remote_file(entry, root) for entry in entries if isinstance(entry, dict))
            following = data.get("next_cursor")
            if not following:
                return files
            if not isinstance(following, str) or following == cursor or not entries:
                raise ProtocolViolation("the file list's next_cursor does not move on")
            cursor = following


async def delete_file(
    server_url: str,
    file_id: str | None = None,
    *,
    token: str | None = None,
    retry: RetryPolicy | None = None,
    on_retry: RetryCallback | None = None,
    timeouts: Timeouts | None = None,
) -> str:
    """Delete one file, named by its URL (``.../files/<id>``) or by ``file_id``; returns the id."""
    root, id_in_url = split_file_url(server_url)
    given = file_id or id_in_url
    if not given:
        raise ClientError("name the file to delete: a URL ending in /files/<id>, or an id")
    budget = RetryBudget(retry or RetryPolicy(), on_retry)
    target = await _complete_id(root, given, token=token, retry=retry, timeouts=timeouts)
    async with open_session(token, timeouts=timeouts) as session:

        async def delete() -> None:
            async with session.delete(api_files_url(root, target)) as resp:
                if resp.status not in (200, 202, 204):
                    raise await server_error(resp, f"deleting {target}")

        await retrying(budget, delete)
    return target


def _remote_file(entry: dict[str, Any], root: URL) -> RemoteFile:
    try:
        file_id = str(entry["id"])
        size = int(entry.get("size") or 0)
    except (KeyError, TypeError, ValueError) as exc:
        raise ProtocolViolation(f"malformed file entry: {entry!r}") from exc
    url = entry.get("url")
    absolute = str(root.join(URL(str(url)))) if url else str(root / "files" / file_id)
    sha256 = entry.get("sha256")
    return RemoteFile(
        id=file_id,
        name=str(entry.get("name") or file_id),
        size=size,
        sha256=str(sha256) if sha256 else None,
        created=_timestamp(entry.get("created")),
        url=absolute,
    )


def _timestamp(value: object) -> datetime | None:
    """Seconds since the epoch or an ISO 8601 string, as an aware datetime."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


async def resolve_file_url(
    url: str,
    *,
    token: str | None = None,
    retry: RetryPolicy | None = None,
    timeouts: Timeouts | None = None,
) -> str:
    """``url`` with its file id completed when it ends in a unique prefix of a stored id
    (``http://host/files/3fa9c1d2``); unchanged when the id is whole or matches none.
    A URL naming no file (the server root) is refused: there is nothing to download."""
    root, given = split_file_url(url)
    if not given:
        raise ClientError(
            f"{url.strip()} names no file: give a file's URL (.../files/ID), or the server's"
            " URL and an id as listed by 'freight ls'"
        )
    found = await _complete_id(root, given, token=token, retry=retry, timeouts=timeouts)
    return url if found == given else str(root / "files" / found)


async def _complete_id(
    root: URL,
    given: str,
    *,
    token: str | None,
    retry: RetryPolicy | None,
    timeouts: Timeouts | None,
) -> str:
    """The stored id ``given`` is a unique prefix of, or ``given`` itself: a whole id (no
    listing needed) or one no stored file starts with (an unfinished upload's, say)."""
    if len(given) >= FULL_ID_LENGTH:
        return given
    try:
        listed = await list_files(str(root), token=token, retry=retry, timeouts=timeouts)
    except ServerError as exc:
        if exc.http_status in _NO_LISTING:
            return given  # a server that lists nothing (another tus server): as given
        raise
    return match_prefix(given, [item.id for item in listed]) or given


async def find_stored(
    session: aiohttp.ClientSession, server_url: str, size: int, sha256: str | None = None
) -> RemoteFile | None:
    """A finished file on the server of ``size`` bytes (and with this SHA-256, if given),
    by ``GET /api/files?size=&sha256=``; None if there is none."""
    root = split_file_url(server_url)[0]
    query = {"size": str(size)} | ({"sha256": sha256} if sha256 else {})
    async with session.get(api_files_url(root).with_query(query)) as resp:
        if resp.status in _NO_LISTING:
            return None  # a server that lists nothing (another tus server) has nothing to skip
        if resp.status != 200:
            raise await server_error(resp, "looking for a stored copy")
        try:
            data = await resp.json(content_type=None)
        except ValueError as exc:
            raise ProtocolViolation("the file list is not valid JSON") from exc
    entries = data.get("files") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise ProtocolViolation("the file list has no 'files' array")
    for entry in entries:
        if isinstance(entry, dict):
            found = _remote_file(entry, root)
            if found.size == size and (sha256 is None or found.sha256 == sha256):
                return found
    return None
