"""One node at a time: which node of a fleet runs background work (the expiry sweep,
finishing interrupted uploads).

Leadership is a session advisory lock, ``pg_try_advisory_lock(class, hashtext(name))``,
held on the node's dedicated link (:mod:`freight.storage.pg_link`). Nodes that do not lead
try again at every heartbeat. When the leader dies its session ends at once and another
node leads within a heartbeat; when it is cut off the server ends its session within
:attr:`~freight.storage.pg_link.LinkSettings.server_gives_up` seconds, and the leader
itself stops sooner, when its heartbeat goes unanswered, so two nodes do not lead at once
as long as the heartbeat notices first (it does with the default settings: about 3 s
against 5). Work that must never run twice still needs its own guard (a compare-and-set on
the record); leadership keeps the fleet from doing everything N times.

Usage::

    while True:
        async with leader.lead() as term:  # waits until this node leads
            await sweep_forever()          # cancelled if leadership is lost
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import asyncpg

from freight.storage.pg_link import Link, LinkSettings

__all__ = ["PgLeader", "Term", "open_pg_leader"]

log = logging.getLogger("freight.storage.pg_leader")

# The class of leadership's (int4, int4) advisory locks; the other half hashes the name.
LEADER_CLASS = 0x66726C64


@dataclass(eq=False)
class Term:
    """One stretch of leadership; ``lost`` is set when it ends."""

    lost: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[object] | None = None
    cancelled: bool = False

    @property
    def active(self) -> bool:
        return not self.lost.is_set()


class PgLeader:
    """Whether this node leads ``name``; :func:`open_pg_leader` makes one."""

    def __init__(self, dsn: str, name: str, link_settings: LinkSettings) -> None:
        self.name = name
        self._leading = asyncio.Event()
        self._terms: set[Term] = set()
        self._link = Link(
            dsn, link_settings, on_up=self._try, on_down=self._on_down, beat=self._beat
        )

    @property
    def leading(self) -> bool:
        """Whether this node leads now, as far as it knows (no I/O)."""
        return self._leading.is_set()

    async def is_leader(self) -> bool:
        return self.leading

    async def wait_leading(self) -> None:
        await self._leading.wait()

    @contextlib.asynccontextmanager
    async def lead(self) -> AsyncIterator[Term]:
        """Wait until this node leads, then run the body; if leadership is lost the body
        is cancelled and the block ends quietly (``term.lost`` is set)."""
        await self._leading.wait()
        term = Term(task=asyncio.current_task())
        self._terms.add(term)
        try:
            yield term
        except asyncio.CancelledError:
            if not (term.cancelled and term.task is not None and term.task.uncancel() == 0):
                raise
        finally:
            self._terms.discard(term)

    async def _try(self, connection: asyncpg.Connection) -> None:
        got = await connection.fetchval(
            "SELECT pg_try_advisory_lock($1, hashtext($2))", LEADER_CLASS, self.name
        )
        if got and not self.leading:
            log.info("this node now leads %s", self.name)
            self._leading.set()

    async def _beat(self, connection: asyncpg.Connection) -> None:
        if self.leading:
            await connection.execute("SELECT 1")
        else:
            await self._try(connection)

    def _on_down(self) -> None:
        if not self.leading:
            return
        log.warning("this node no longer leads %s (its database link is lost)", self.name)
        self._step_down()

    def _step_down(self) -> None:
        self._leading.clear()
        for term in list(self._terms):
            term.lost.set()
            if term.task is not None and not term.cancelled:
                term.cancelled = True
                term.task.cancel()

    async def close(self) -> None:
        self._step_down()
        await self._link.close()  # ending the session frees the lock for another node


async def open_pg_leader(
    dsn: str, name: str, link_settings: LinkSettings | None = None
) -> PgLeader:
    """Take part in the election for ``name`` on ``dsn`` (leading at once if free)."""
    link_settings = link_settings or LinkSettings(application_name=f"freight-leader-{name}")
    leader = PgLeader(dsn, name, link_settings)
    await leader._link.start()
    return leader
