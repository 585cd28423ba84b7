"""A TCP proxy on 127.0.0.1 that misbehaves like a bad link, for the resilience tests.

``cut_every``: every connection is reset once it has forwarded that many bytes in the
watched direction (each new connection gets the same allowance), so a transfer only gets
through by resuming many times; ``cut_between=(low, high)`` draws each connection's
allowance at random in that range instead (``seed`` makes the draws repeatable).
``stall_after``: once, after that many bytes in the watched direction, the proxy stops
forwarding both ways but keeps the connection open (a hung middlebox); it records when the
client gave up on it (closed it, or connected again).
"""

from __future__ import annotations

import asyncio
import random
import select
import time
from dataclasses import dataclass, field

from cli_support import LoopThread


@dataclass
class LinkStats:
    cuts: int = 0
    connections: int = 0
    stalled_at: float | None = None  # time.monotonic() when forwarding stopped
    stall_noticed_at: float | None = None  # when the client closed the stalled connection
    forwarded: dict[str, int] = field(default_factory=lambda: {"up": 0, "down": 0})


class FlakyLink:
    def __init__(
        self,
        upstream_port: int,
        *,
        direction: str = "up",
        cut_every: int | None = None,
        cut_between: tuple[int, int] | None = None,
        seed: int = 0,
        stall_after: int | None = None,
    ) -> None:
        self.upstream_port = upstream_port
        self.direction = direction
        self.cut_every = cut_every
        self.cut_between = cut_between
        self._random = random.Random(seed)
        self.stall_after = stall_after
        self.stats = LinkStats()
        self._loops = LoopThread()
        self._server: asyncio.Server | None = None
        self._stalled = False
        self._links: set[_Connection] = set()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def tcp_url(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def start(self) -> FlakyLink:
        async def listen() -> asyncio.Server:
            return await asyncio.start_server(self._handle, "127.0.0.1", 0)

        self._server = self._loops.run(listen())
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        if self._server is not None:
            server = self._server

            async def close() -> None:
                server.close()
                for each in list(self._links):
                    each.close()
                await asyncio.sleep(0.1)  # let the handlers see it and end

            self._loops.run(close())
        self._loops.close()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.stats.connections += 1
        if self._stalled and self.stats.stall_noticed_at is None:
            # A new connection after the stall: the client gave up on the stalled one.
            self.stats.stall_noticed_at = time.monotonic()
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            client_w.transport.abort()
            return
        cut = self.cut_every
        if self.cut_between is not None:
            cut = self._random.randint(*self.cut_between)
        link = _Connection(self, (client_w, server_w), cut)
        self._links.add(link)
        await asyncio.gather(
            link.pump(client_r, server_w, "up"),
            link.pump(server_r, client_w, "down"),
            return_exceptions=True,
        )
        link.close()
        self._links.discard(link)


class _Connection:
    def __init__(
        self, owner: FlakyLink, writers: tuple[asyncio.StreamWriter, ...], cut: int | None
    ) -> None:
        self.owner = owner
        self.writers = writers
        self.cut = cut  # bytes this connection may forward in the watched direction
        self.counted = 0  # bytes forwarded in the watched direction on this connection
        self.frozen = False
        self.closed = False

    def close(self) -> None:
        self.closed = True
        for writer in self.writers:
            writer.transport.abort()

    async def pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, direction: str
    ) -> None:
        owner = self.owner
        try:
            while data := await reader.read(64 * 1024):
                if self.frozen:
                    break
                if direction == owner.direction:
                    data = self._allowance(data)
                if data:
                    writer.write(data)
                    await writer.drain()
                    owner.stats.forwarded[direction] += len(data)
                if self.frozen:
                    await self._hang()
                    break
                if direction == owner.direction and self._must_cut():
                    owner.stats.cuts += 1
                    await asyncio.sleep(0.02)  # let the last bytes reach the far end
                    break
        except OSError:
            pass
        if not self.frozen:
            self.close()

    async def _hang(self) -> None:
        """Read and forward nothing more (buffers fill, the sender blocks) until the client
        closes the connection, which is when it noticed the stall."""
        sock = self.writers[0].get_extra_info("socket")
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLRDHUP | select.POLLHUP | select.POLLERR)
        while not poller.poll(0) and not self.closed:
            await asyncio.sleep(0.05)
        if self.owner.stats.stall_noticed_at is None:
            self.owner.stats.stall_noticed_at = time.monotonic()
        self.close()

    def _allowance(self, data: bytes) -> bytes:
        owner = self.owner
        limits = [self.cut] if self.cut else []
        if owner.stall_after is not None and not owner._stalled:
            limits.append(owner.stall_after - owner.stats.forwarded[owner.direction] + self.counted)
        if limits:
            data = data[: max(0, min(limits) - self.counted)]
        self.counted += len(data)
        stall = owner.stall_after
        if (
            stall is not None
            and not owner._stalled
            and owner.stats.forwarded[owner.direction] + len(data) >= stall
        ):
            owner._stalled = True
            owner.stats.stalled_at = time.monotonic()
            self.frozen = True
        return data

    def _must_cut(self) -> bool:
        return self.cut is not None and self.counted >= self.cut
