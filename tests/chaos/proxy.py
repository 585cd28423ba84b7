"""A TCP proxy on 127.0.0.1 that breaks links on purpose: gate, cut, stall.

- **gate**: while closed, new connections are reset at once and :meth:`LinkProxy.cut_all`
  resets the open ones, so a test can inspect the server with no client writing to it.
- **rate**: each connection forwards at most ``rate`` client bytes per second, so a kill
  or a stall lands while bytes flow.
- **cut**: each connection forwards a random number of client bytes (``cut_range``), then
  both of its sockets are reset: a pulled cable, over and over.
- **stall**: :meth:`LinkProxy.stall` freezes every open connection (nothing forwarded either
  way, sockets kept open) for ``seconds``; the first connection opened after that is the
  client's reaction, and :attr:`LinkProxy.detections` records how long it took.

It runs in its own event loop thread (:class:`~cli_support.LoopThread`), so synchronous tests
and in-process clients on another loop can both use it.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field

from tests.cli.cli_support import LoopThread

__all__ = ["LinkProxy"]

_READ = 64 * 1024


@dataclass(eq=False)
class _Link:
    client: asyncio.StreamWriter
    server: asyncio.StreamWriter | None = None
    budget: int | None = None  # client bytes left before the cut
    opened: float = field(default_factory=time.monotonic)
    forwarded: int = 0  # client bytes
    frozen_until: float = 0.0  # monotonic time; forwarding waits until then

    def reset(self) -> None:
        for writer in (self.client, self.server):
            if writer is not None:
                writer.transport.abort()


@dataclass(eq=False)
class LinkProxy:
    """Forwards ``127.0.0.1:port`` to ``127.0.0.1:upstream_port``; see the module doc."""

    upstream_port: int
    cut_range: tuple[int, int] | None = None
    rate: int | None = None  # client bytes per second per link
    seed: int = 0
    port: int = 0
    closed: bool = False
    connections: int = 0
    cuts: int = 0
    upstream_bytes: int = 0
    detections: list[float] = field(default_factory=list)
    _stall_started: float | None = None
    _links: set[_Link] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)
        self._loop = LoopThread()
        self._server: asyncio.Server | None = None

    def start(self) -> LinkProxy:
        async def listen() -> asyncio.Server:
            return await asyncio.start_server(self._accept, "127.0.0.1", 0)

        self._server = self._loop.run(listen())
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    def stop(self) -> None:
        server = self._server

        async def close() -> None:
            if server is not None:
                server.close()
            for link in list(self._links):
                link.reset()

        self._loop.run(close())
        self._loop.close()

    # controls, callable from any thread

    def close_gate(self) -> None:
        self.closed = True
        self.cut_all()

    def open_gate(self) -> None:
        self.closed = False

    def cut_all(self) -> None:
        async def cut() -> None:
            for link in list(self._links):
                link.reset()

        self._loop.run(cut())

    def stall(self, seconds: float) -> int:
        """Freeze every open link for ``seconds``; returns how many were frozen."""

        async def freeze() -> int:
            until = time.monotonic() + seconds
            self._stall_started = time.monotonic()
            for link in self._links:
                link.frozen_until = until
            return len(self._links)

        return self._loop.run(freeze())

    # the forwarding

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self._stall_started is not None:
            self.detections.append(time.monotonic() - self._stall_started)
            self._stall_started = None
        if self.closed:
            writer.transport.abort()
            return
        link = _Link(writer)
        if self.cut_range is not None:
            link.budget = self._random.randint(*self.cut_range)
        self._links.add(link)
        try:
            up_reader, link.server = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            await asyncio.gather(
                self._pump(link, reader, link.server, upstream=True),
                self._pump(link, up_reader, writer, upstream=False),
                return_exceptions=True,
            )
        except OSError:
            pass
        finally:
            self._links.discard(link)
            link.reset()

    async def _pump(
        self,
        link: _Link,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        upstream: bool,
    ) -> None:
        try:
            while data := await reader.read(_READ):
                while (wait := link.frozen_until - time.monotonic()) > 0:
                    await asyncio.sleep(min(wait, 0.05))
                if upstream and link.budget is not None:
                    data = data[: link.budget]
                    link.budget -= len(data)
                writer.write(data)
                await writer.drain()
                if upstream:
                    link.forwarded += len(data)
                    self.upstream_bytes += len(data)
                    if self.rate:
                        await asyncio.sleep(
                            link.opened + link.forwarded / self.rate - time.monotonic()
                        )
                if upstream and link.budget == 0:
                    self.cuts += 1
                    await asyncio.sleep(0.02)  # let the last bytes reach the server
                    break
        except OSError:
            pass
        link.reset()
