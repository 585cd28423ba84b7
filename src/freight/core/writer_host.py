"""What an :class:`~freight.core.writer.UploadWriter` needs from the engine that opened it.

Declared apart from both so the writer never imports the engine: the engine imports the
writer, not the reverse.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from freight.config import FsyncPolicy
from freight.core.buffers import BufferPool
from freight.core.inline_hash import InlineHash
from freight.core.ports import HeldClaim
from freight.core.session import UploadSession

__all__ = ["WriterHost", "WrittenUpload"]


class WrittenUpload(Protocol):
    """What a writer reads of the upload it writes to (the engine's ``ActiveUpload``)."""

    @property
    def session(self) -> UploadSession: ...

    @property
    def catch_up(self) -> asyncio.Task[None] | None: ...

    @property
    def inline(self) -> InlineHash | None: ...


class WriterHost(Protocol):
    """The engine (:class:`~freight.core.engine.UploadEngine`) as a writer sees it.

    ``active`` is the engine's own record of the upload, handed back as it came
    (``Any``: the engine's methods take its concrete ``ActiveUpload``).
    """

    @property
    def fsync(self) -> FsyncPolicy: ...

    @property
    def sync_every(self) -> int: ...

    @property
    def buffers(self) -> BufferPool: ...

    def hash_trails(self, active: Any, start: int, position: int) -> bool: ...

    async def hash_progress(self, active: Any) -> None: ...

    def hash_joins(self, active: Any, position: int) -> bool: ...

    async def hash_reach(self, active: Any, position: int) -> None: ...

    def note_written(self, active: Any, size: int) -> None: ...

    async def record_received(
        self, active: Any, start: int, end: int, fence: HeldClaim | None = None
    ) -> None: ...
