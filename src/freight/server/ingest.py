"""Reading a socket straight into an upload writer's staging buffer.

An :class:`asyncio.BufferedProtocol` hands asyncio ``WriterFeed.space()`` as its buffer,
so the kernel's ``recv_into`` puts each byte once into memory that goes to the disk as it
is: no bytes object per read and no copy into the staging buffer. A full buffer goes to
the writer's worker threads at once when the previous one is written; otherwise reading is
held until it is, so a slow disk pushes back on the client through TCP itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from freight.core.writer import UploadWriter
from freight.errors import FreightError

__all__ = ["WriterFeed"]


class WriterFeed:
    """One writer fed from one transport; ``hold``/``release`` pause and resume reading."""

    def __init__(
        self,
        writer: UploadWriter,
        *,
        hold: Callable[[], None],
        release: Callable[[], None],
        fail: Callable[[BaseException], None],
    ) -> None:
        self.writer = writer
        self._hold = hold
        self._release = release
        self._fail = fail
        self._waiting: asyncio.Task[None] | None = None

    def space(self, limit: int) -> memoryview:
        """Where the next read may go, at most ``limit`` bytes; empty while room is made."""
        if self._waiting is not None:
            return memoryview(b"")
        return self.writer.free_space()[:limit]

    def fed(self, nbytes: int) -> None:
        """``nbytes`` were read into the start of the last :meth:`space`."""
        self.writer.filled(nbytes)
        if self.writer.is_full:
            self._make_room()

    async def settle(self) -> None:
        """Wait until no hand-off is under way, so the writer may be used directly."""
        if self._waiting is not None:
            await asyncio.wait([self._waiting])

    def cancel(self) -> None:
        if self._waiting is not None:
            self._waiting.cancel()

    def _make_room(self) -> None:
        try:
            if self.writer.hand_off_nowait():
                return
        except (FreightError, OSError) as exc:
            self._hold()
            self._fail(exc)
            return
        self._hold()
        self._waiting = asyncio.ensure_future(self._hand_off_then_release())

    async def _hand_off_then_release(self) -> None:
        try:
            await self.writer.hand_off()
        except (FreightError, OSError) as exc:
            self._fail(exc)
            return
        finally:
            self._waiting = None
        self._release()
