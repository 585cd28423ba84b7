"""The engine's ports: the interface every storage backend implements, and the optional
abilities beside it. The engine owns them; backends (:mod:`freight.storage`) implement them.

The engine decides *what* happens to an upload; a backend only keeps bytes and session
records. Methods are synchronous and may block: the engine calls the slow ones from worker
threads. A backend raises :class:`freight.errors.UploadNotFound` for unknown ids and
:class:`freight.errors.InsufficientStorage` when it runs out of space; any other failure is
wrapped in a :class:`freight.errors.FreightError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, TypeAlias, runtime_checkable

from freight._types import Buffer
from freight.core.session import UploadSession

__all__ = [
    "ListingKind",
    "PageKey",
    "PartFile",
    "SendfileSource",
    "UnfinishedTotals",
    "UploadStore",
]

ListingKind: TypeAlias = Literal["files", "uploads"]
"""``files``: finished uploads (no used concatenation parts); ``uploads``: unexpired ones
still receiving."""

PageKey: TypeAlias = tuple[float, str]
"""Where a listing page ends: the last session's ``(created, id)``."""


@dataclass(frozen=True)
class UnfinishedTotals:
    """Unfinished uploads, and the bytes they still need (declared minus received)."""

    count: int
    pending_bytes: int


class PartFile(Protocol):
    """The bytes of one unfinished upload, written in place at their final offsets."""

    def write_at(self, offset: int, data: Buffer) -> None: ...

    def read_into(self, offset: int, buffer: memoryview) -> int: ...

    def sync(self) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class PipeTarget(Protocol):
    """A part file that can take bytes straight from a pipe (``splice``), never through
    user space."""

    def write_from_pipe(self, pipe: int, offset: int, size: int) -> None: ...

    def sync(self) -> None: ...


class UploadStore(Protocol):
    def create(self, session: UploadSession) -> None:
        """Record a new session. Space is taken as bytes arrive, not for the declared length."""

    def load(self, upload_id: str) -> UploadSession: ...

    def save(self, session: UploadSession) -> None:
        """Persist the session durably (what it says received must already be on disk)."""

    def open_part(self, session: UploadSession) -> PartFile: ...

    def reserve(self, session: UploadSession) -> None:
        """A deferred length became known (a backend taking space as bytes arrive does
        nothing)."""

    def finish(self, session: UploadSession) -> None:
        """Turn the complete part into a stored file (a rename, never a copy)."""

    def open_file(self, upload_id: str) -> PartFile:
        """Open a finished file for reading."""

    def delete(self, upload_id: str) -> None:
        """Forget the session and free its bytes; unknown ids are not an error."""

    def list_sessions(self) -> list[UploadSession]: ...

    def list_page(
        self, kind: ListingKind, after: PageKey | None, limit: int, now: float
    ) -> list[UploadSession]:
        """Up to ``limit`` sessions of a listing in creation order, after ``after``."""

    def unfinished_totals(self, now: float, client: str | None = None) -> UnfinishedTotals:
        """Unexpired unfinished uploads (only ``client``'s if given) and what they need."""

    def work_ids(self, limit: int) -> list[str]:
        """Complete uploads not finished yet, and concatenations waiting to be assembled."""

    def expired_ids(self, now: float) -> list[str]: ...

    def free_bytes(self) -> int: ...

    def close(self) -> None: ...


@runtime_checkable
class SendfileSource(Protocol):
    """A backend whose finished files are local files the kernel can send directly."""

    def file_path(self, upload_id: str) -> Path: ...
