"""freight's raw TCP transport: ``freight serve --tcp-port N`` (specified in docs/protocol.md).

Receiving is one :class:`asyncio.BufferedProtocol` per connection. Control frames and DATA
headers are read into a small buffer and decoded by
:class:`~freight.protocol.frames.FrameDecoder`; a DATA payload at the offset the upload
expects is read by the kernel straight into the engine's staging buffer (see
:mod:`freight.server.ingest`), which worker threads write and hash: each byte is copied
once, from the socket to the buffer that goes to disk. Reading pauses while a window is made
durable or the disk is behind, so a slow disk pushes back on the client through TCP itself.

Sending a file (GET) is ``loop.sendfile`` per DATA frame: the payload never enters Python,
and asyncio loops over partial ``os.sendfile`` calls.

A connection's life, in the order of
:meth:`~freight.server.tcp_handlers.TcpConnection._serve`:

* ``HELLO`` → ``WELCOME`` (or ``ERROR`` and close: bad version, wrong token);
* then requests, one at a time: ``PUT`` or ``RESUME`` → ``ACCEPTED``, ``DATA``… (an ``ACK``
  after each window made durable), ``DONE`` → ``FINISHED``; ``RESUME`` of a finished upload
  → ``FINISHED``; ``GET`` → ``FILE``, ``DATA``….
* An error while both sides agree where the stream stands (answering a request, or DONE)
  is an ``ERROR`` frame and the connection waits for the next request; an error while DATA
  may be in flight is an ``ERROR`` frame and the end of the connection.

The code lives by concern: :mod:`freight.server.tcp_connection` (the asyncio protocol
plumbing), :mod:`freight.server.tcp_handlers` (the requests) and this module (the
listener, which tracks and ends connections).
"""

from __future__ import annotations

import asyncio
import logging

from freight.config import ServerConfig
from freight.core import UploadEngine
from freight.core.pipes import splicing_available
from freight.same_host import unpace_listeners
from freight.server.connections import pending_cap
from freight.server.principals import Gate
from freight.server.splice import Splicers
from freight.server.tcp_connection import ByteCounter, ConnectionPlumbing, TcpSettings
from freight.server.tcp_handlers import TcpConnection, error_frame

__all__ = ["TcpServer", "TcpSettings", "error_frame", "start_tcp_server"]

log = logging.getLogger(__name__)


def _ignore(nbytes: float) -> None:
    return None


class TcpServer:
    """Listens for freight TCP connections and serves them with ``engine``."""

    def __init__(
        self,
        engine: UploadEngine,
        settings: TcpSettings | None = None,
        *,
        on_received: ByteCounter = _ignore,
        on_sent: ByteCounter = _ignore,
        gate: Gate | None = None,
    ) -> None:
        self.engine = engine
        self.settings = settings or TcpSettings()
        # Who a HELLO's token stands for: the HTTP application's gate, so users, tokens and
        # quotas are the same on both listeners.
        self.gate = gate or Gate(self.settings.token)
        self.on_received = on_received  # upload bytes, counted a window at a time
        self.on_sent = on_sent  # download bytes
        self._server: asyncio.Server | None = None
        self._connections: set[ConnectionPlumbing] = set()
        self._pending: dict[ConnectionPlumbing, None] = {}  # no HELLO yet, oldest first
        self.splicers = Splicers() if splicing_available() else None
        self.address: tuple[str, int] = ("", 0)

    async def start(self, host: str, port: int) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: TcpConnection(self), host, port, reuse_address=True
        )
        unpace_listeners(self._server.sockets)
        sockname = self._server.sockets[0].getsockname()
        self.address = (str(sockname[0]), int(sockname[1]))
        return self.address

    def track(self, connection: ConnectionPlumbing) -> None:
        self._connections.add(connection)
        self._pending[connection] = None
        while len(self._pending) > self.settings.max_pending:
            oldest = next(iter(self._pending))
            del self._pending[oldest]
            oldest.abort()

    def handshake_over(self, connection: ConnectionPlumbing) -> None:
        self._pending.pop(connection, None)

    def forget(self, connection: ConnectionPlumbing) -> None:
        self._connections.discard(connection)
        self._pending.pop(connection, None)

    def stop_listening(self) -> None:
        """Accept no more connections; those open go on."""
        if self._server is not None:
            self._server.close()

    async def close(self, timeout: float | None = None) -> None:
        """Stop listening, end every connection and wait (up to ``timeout``) until their
        writers let go: an upload keeps what reached its file, as after a dropped link."""
        self.stop_listening()
        connections = list(self._connections)
        for connection in connections:
            connection.abort()
        tasks = [c.task for c in connections if c.task is not None]
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=timeout)
            for task in late:
                task.cancel()
            if late:
                log.warning("tcp: %d connections did not end in time; cancelled", len(late))
                await asyncio.wait(late)
        if self._server is not None:
            await self._server.wait_closed()
        if self.splicers is not None:
            self.splicers.shutdown()


async def start_tcp_server(
    engine: UploadEngine,
    config: ServerConfig,
    *,
    on_received: ByteCounter = _ignore,
    on_sent: ByteCounter = _ignore,
    gate: Gate | None = None,
) -> TcpServer:
    """Start the TCP listener ``config`` asks for, sharing the HTTP app's engine."""
    assert config.tcp_port is not None
    settings = TcpSettings(
        token=config.token,
        idle_timeout=config.idle_timeout,
        handshake_timeout=config.header_timeout,
        max_pending=pending_cap(config.max_pending),
    )
    server = TcpServer(engine, settings, on_received=on_received, on_sent=on_sent, gate=gate)
    await server.start(config.host, config.tcp_port)
    return server
