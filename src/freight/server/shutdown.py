"""Ending the server on SIGTERM within ``--shutdown-timeout``, keeping what is durable.

An upload request lasts as long as its client likes, so waiting for requests to end (what
aiohttp does, for up to a minute per connection) held the process for as long as a slow
client kept sending: 97 s for one tus PATCH at 5 MiB/s. Here, in order:

1. Stop accepting: the HTTP sites and the TCP listener close; a client connecting now is
   refused and retries against the next server.
2. Every transfer stops at its next durable point (:func:`stop_transfers`, an
   ``on_shutdown`` hook): WebSocket uploads record what they received and close with 1001
   "going away"; every other upload (tus, IETF, chunks, TCP) is interrupted as a take-over
   does it: its connection drops and what reached the file is synced and recorded; event
   streams end; TCP connections close. Each client resumes from what it was told is
   durable, or more. This gets a quarter of the budget.
3. aiohttp closes idle keep-alive connections, lets running requests (downloads, answers
   being written) finish for a quarter of the budget, then cancels them and waits as long
   again (``AppRunner(shutdown_timeout=...)``).
4. The engine closes (the database, part files).

Should any of it still hang (a disk that stopped answering), a watchdog ends the process
:data:`OVERRUN_GRACE` seconds after the budget, with one log line and exit status 1.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from typing import TYPE_CHECKING, Final

from aiohttp import web

from freight.server.state import ENGINE, SETTINGS
from freight.server.ws import ws_going_away

if TYPE_CHECKING:  # the TCP listener is loaded only where --tcp-port asks for it
    from freight.server.tcp import TcpServer

__all__ = ["OVERRUN_GRACE", "request_grace", "shut_down", "stop_transfers"]

log = logging.getLogger(__name__)

OVERRUN_GRACE: Final = 2.0


def request_grace(budget: float) -> float:
    """aiohttp's ``shutdown_timeout``: it waits this long for running requests, then cancels
    them and waits as long again."""
    return budget / 4


async def stop_transfers(app: web.Application) -> None:
    """Step 2: every upload ends at its next durable point (see the module docstring)."""
    ws_going_away(app)  # first: the writers' interrupt would drop their sockets instead
    try:
        async with asyncio.timeout(app[SETTINGS].shutdown_timeout / 4):
            await app[ENGINE].interrupt_writers()
    except TimeoutError:
        log.warning("shutdown: some uploads did not stop in time; they are cut off")


async def shut_down(runner: web.AppRunner, tcp: TcpServer | None, budget: float) -> None:
    """Steps 1 to 4 for the application of ``runner`` and the TCP server, if any."""
    watchdog = threading.Timer(budget + OVERRUN_GRACE, _overran, args=(budget,))
    watchdog.daemon = True
    watchdog.start()
    try:
        for site in list(runner.sites):
            await site.stop()
        if tcp is not None:
            tcp.stop_listening()
        closing_tcp = tcp.close(timeout=budget / 4) if tcp is not None else asyncio.sleep(0)
        await asyncio.gather(closing_tcp, runner.cleanup())
    finally:
        watchdog.cancel()


def _overran(budget: float) -> None:
    log.error("shutdown took longer than %g s; exiting now", budget + OVERRUN_GRACE)
    logging.shutdown()
    os._exit(1)
