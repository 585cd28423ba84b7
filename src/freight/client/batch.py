"""Sending many files: what to send (files and directory trees, minus excluded names),
skipping what the server has already, a few files at a time.

Each file keeps its path relative to the directory given (``photos/2024/a.jpg`` for
``photos/``), the way Uppy sends ``relativePath``; a file given by itself is its name.

Skipping costs no extra hashing in the common case: the server is asked first whether it
holds any file of the same *size* (``GET /api/files?size=``). Only then is the file hashed
(one read) and asked for by size and SHA-256; if the server lacks it, that digest is the
upload's (:func:`~freight.client.hashing.known_digest`), so the upload reads the file once
more but hashes nothing. A file of a size the server has not seen is read and hashed once,
while it is sent.
"""

from __future__ import annotations

import asyncio
import fnmatch
import os
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Protocol

import aiohttp

from freight.client.errors import ClientError
from freight.client.files import RemoteFile, find_stored
from freight.client.hashing import hash_file, known_digest
from freight.client.http import RetryBudget, RetryNotice, RetryPolicy, describe_error, retrying
from freight.client.options import DEFAULTS, TransferOptions
from freight.client.upload import UploadResult

__all__ = [
    "BatchWatcher",
    "Outcome",
    "SendItem",
    "collect_files",
    "send_files",
]

Uploader = Callable[..., Coroutine[Any, Any, UploadResult]]


@dataclass(frozen=True)
class SendItem:
    """One local file to send: where it is, what it is called relative to what was given."""

    path: Path
    relative: str
    size: int


@dataclass
class Outcome:
    """What became of one file: ``sent`` (``result``), ``skipped`` (``existing``, the
    server's copy) or ``failed`` (``error``)."""

    item: SendItem
    status: Literal["sent", "skipped", "failed"]
    result: UploadResult | None = None
    existing: RemoteFile | None = None
    error: str | None = None
    seconds: float = 0.0


class BatchWatcher(Protocol):
    """What a UI is told while a batch runs; every method is called on the event loop."""

    def checking(self, item: SendItem) -> None: ...

    def started(self, item: SendItem, size: int, offset: int) -> None: ...

    def progress(self, item: SendItem, done: int) -> None: ...

    def retrying(self, item: SendItem, notice: RetryNotice) -> None: ...

    def finished(self, outcome: Outcome) -> None: ...


@dataclass
class Collected:
    """The files found under the paths given, and the paths that could not be used."""

    items: list[SendItem] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (path, why)


def collect_files(paths: Sequence[Path], exclude: Sequence[str] = ()) -> Collected:
    """Regular files named by ``paths`` and in the directory trees they name, in a stable
    order, except those whose name or relative path matches a glob of ``exclude``
    (an excluded directory is not entered). Links to directories are not followed."""
    found = Collected()
    for given in paths:
        if given.is_dir():
            _walk(given, exclude, found)
        elif given.is_file():
            if not _excluded(given.name, given.name, exclude):
                found.items.append(SendItem(given, _name(given), given.stat().st_size))
        else:
            found.problems.append(
                (str(given), "no such file" if not given.exists() else "not a file")
            )
    return found


def _walk(top: Path, exclude: Sequence[str], found: Collected) -> None:
    base = _name(top.resolve()) if top.name in ("", ".", "..") else _name(top)

    def unreadable(error: OSError) -> None:
        found.problems.append((str(error.filename or top), error.strerror or str(error)))

    for folder, dirs, files in os.walk(top, onerror=unreadable):
        inside = Path(folder).relative_to(top)
        dirs[:] = sorted(d for d in dirs if not _excluded(d, _relative(base, inside / d), exclude))
        for name in sorted(files):
            path = Path(folder, name)
            relative = _relative(base, inside / name)
            if _excluded(name, relative, exclude) or not path.is_file():
                continue
            found.items.append(SendItem(path, relative, path.stat().st_size))


def _name(path: Path) -> str:
    # Names that are not valid UTF-8 cannot be sent as they are (see display_name).
    return path.name.encode("utf-8", "replace").decode("utf-8")


def _relative(base: str, inside: Path) -> str:
    text = "/".join(part for part in (base, inside.as_posix()) if part and part != ".")
    return text.encode("utf-8", "replace").decode("utf-8")


def _excluded(name: str, relative: str, patterns: Iterable[str]) -> bool:
    return any(
        fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(relative, pattern)
        for pattern in patterns
    )


async def send_files(
    items: Sequence[SendItem],
    server_url: str,
    uploader: Uploader,
    watcher: BatchWatcher,
    options: TransferOptions = DEFAULTS,
    *,
    transfers: int = 1,
    force: bool = False,
    with_metadata: bool = False,
    **specific: Any,
) -> list[Outcome]:
    """Send ``items`` to ``server_url`` with ``uploader`` (one of
    :data:`freight.client.protocols.UPLOADERS`), ``transfers`` files at a time; a failed
    file does not stop the others. Unless ``force``, a file the server holds already (same
    size and SHA-256) is skipped. Every file is sent with ``options``, its progress and retry
    notices going to ``watcher``, and the uploader's own ``specific`` arguments.
    ``with_metadata`` sends each file's ``relativePath`` (every uploader takes
    ``metadata``; each sends the path in its protocol's own field)."""
    gate = asyncio.Semaphore(max(1, transfers))
    async with options.session() as lookups:

        async def one(item: SendItem) -> Outcome:
            async with gate:
                loop = asyncio.get_running_loop()
                started = loop.time()
                outcome = await _send_one(
                    item,
                    server_url,
                    uploader,
                    watcher,
                    lookups=lookups,
                    force=force,
                    options=options,
                    specific={**specific, **_metadata(item, with_metadata)},
                )
                outcome.seconds = loop.time() - started
                watcher.finished(outcome)
                return outcome

        return list(await asyncio.gather(*(one(item) for item in items)))


def _metadata(item: SendItem, wanted: bool) -> dict[str, Any]:
    # Only files found in a directory have a path to keep (Uppy sends null for the others).
    if not wanted or "/" not in item.relative:
        return {}
    return {"metadata": {"relativePath": item.relative}}


async def _send_one(
    item: SendItem,
    server_url: str,
    uploader: Uploader,
    watcher: BatchWatcher,
    *,
    lookups: aiohttp.ClientSession,
    force: bool,
    options: TransferOptions,
    specific: dict[str, Any],
) -> Outcome:
    try:
        digest: bytes | None = None
        if not force:
            watcher.checking(item)
            existing, digest = await _stored_copy(item, server_url, lookups, options.retry)
            if existing is not None:
                return Outcome(item, "skipped", existing=existing)

        def on_retry(notice: RetryNotice) -> None:
            watcher.retrying(item, notice)

        call = uploader(
            item.path,
            server_url,
            replace(options, progress=lambda done: watcher.progress(item, done), on_retry=on_retry),
            on_start=lambda size, offset: watcher.started(item, size, offset),
            **specific,
        )
        if digest is None:
            result = await call
        else:
            with known_digest(item.path, item.size, digest):
                result = await call
        return Outcome(item, "sent", result=result)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # one file's failure is reported, and the others go on
        # aiohttp's errors first: many are OSErrors too (a refused TLS certificate is).
        if isinstance(exc, OSError) and not isinstance(exc, aiohttp.ClientError):
            return Outcome(item, "failed", error=_os_error(exc))
        return Outcome(item, "failed", error=describe_error(exc))


async def _stored_copy(
    item: SendItem, server_url: str, session: aiohttp.ClientSession, policy: RetryPolicy
) -> tuple[RemoteFile | None, bytes | None]:
    """The server's copy of ``item`` if it has one; else None and the file's digest if it
    had to be hashed to tell (the server holds another file of that size)."""
    budget = RetryBudget(policy)
    same_size = await retrying(budget, lambda: find_stored(session, server_url, item.size))
    if same_size is None:
        return None, None
    size, digest = await asyncio.to_thread(hash_file, item.path)
    if size != item.size:
        raise ClientError(f"{item.path} changed size while it was hashed")
    if same_size.sha256 == digest.hex():
        return same_size, digest
    found = await retrying(
        budget, lambda: find_stored(session, server_url, item.size, digest.hex())
    )
    return found, digest


def _os_error(exc: OSError) -> str:
    if exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    return str(exc)
