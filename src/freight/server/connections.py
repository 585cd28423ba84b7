"""What one HTTP connection may cost before it has sent a request (docs/limits.md).

aiohttp bounds the size of a request head but not the time it may take, and accepts
connections until the process runs out of descriptors. Here each connection is an aiohttp
:class:`~aiohttp.web.RequestHandler` with a guard around it:

* it must send a whole request head within ``header_timeout`` of being accepted (later
  heads on a keep-alive connection within aiohttp's ``keepalive_timeout`` of the previous
  response), and at most :data:`MAX_REQUEST_HEAD` bytes of it;
* at most ``max_pending`` connections may wait for a request head (new, or idle between
  requests) at once, and never more than a quarter of the descriptors the process may open;
  past that the one that has waited longest is closed, so a flood of slow connections
  makes room for new clients instead of locking them out;
* a malformed request head costs one debug line, never a traceback;
* running out of descriptors in ``accept()`` costs one warning line per
  :data:`ACCEPT_ERROR_EVERY` seconds (asyncio logs a traceback per failed accept).
"""

from __future__ import annotations

import asyncio
import logging
import resource
import ssl
import time
from typing import Any, Final

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from freight.config import ServerConfig
from freight.same_host import unpace_listeners

__all__ = [
    "MAX_HEADERS",
    "MAX_HEADER_FIELD",
    "MAX_REQUEST_HEAD",
    "MAX_REQUEST_LINE",
    "ConnectionGuard",
    "GuardedSite",
    "handler_options",
    "pending_cap",
    "quiet_accept_errors",
]

log = logging.getLogger(__name__)

# The request head limits, one coherent set: a field holds the largest header freight
# reads (Upload-Metadata up to 64 KiB, Upload-Concat with 1,000 URLs of up to 128 bytes).
MAX_REQUEST_LINE: Final = 8 * 1024
MAX_HEADER_FIELD: Final = 128 * 1024  # one header line (aiohttp's C parser: name, value each)
MAX_HEADERS: Final = 128
MAX_REQUEST_HEAD: Final = 256 * 1024  # the whole head; bounds memory per slow connection
ACCEPT_ERROR_EVERY: Final = 10.0
_TOO_LARGE: Final = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"Content-Length: 0\r\nConnection: close\r\n\r\n"
)


def handler_options(config: ServerConfig) -> dict[str, Any]:
    """aiohttp RequestHandler arguments for the limits above."""
    return {
        "max_line_size": MAX_REQUEST_LINE,
        "max_field_size": MAX_HEADER_FIELD,
        "max_headers": MAX_HEADERS,
        "keepalive_timeout": config.keepalive_timeout,
    }


def pending_cap(configured: int) -> int:
    """``configured``, but at most a quarter of the descriptors this process may open."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return configured
    return max(1, min(configured, soft // 4))


class ConnectionGuard:
    """Tracks the connections waiting for a request head, oldest first."""

    def __init__(self, header_timeout: float, max_pending: int) -> None:
        self.header_timeout = header_timeout
        self.max_pending = max_pending
        self._waiting: dict[GuardedHandler, None] = {}
        self.dropped = 0

    def waiting(self, handler: GuardedHandler) -> None:
        self._waiting.pop(handler, None)
        self._waiting[handler] = None
        while len(self._waiting) > self.max_pending:
            oldest = next(iter(self._waiting))
            del self._waiting[oldest]
            self.dropped += 1
            oldest.force_close()

    def is_waiting(self, handler: GuardedHandler) -> bool:
        return handler in self._waiting

    def busy(self, handler: GuardedHandler) -> None:
        self._waiting.pop(handler, None)


class GuardedHandler(web.RequestHandler):
    """aiohttp's connection handler, timed and counted by a :class:`ConnectionGuard`."""

    def __init__(self, guard: ConnectionGuard, manager: web.Server, **options: Any) -> None:
        super().__init__(manager, **options)
        self._guard = guard
        self._head_bytes = 0
        self._answered = 0
        self._last_body: object = None
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        loop = asyncio.get_running_loop()
        self._head_timer = loop.call_later(self._guard.header_timeout, self._too_slow)
        self._guard.waiting(self)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._stop_timer()
        self._guard.busy(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._guard.is_waiting(self) and self._body_done():
            end = data.find(b"\r\n\r\n")
            self._head_bytes += len(data) if end < 0 else end + 4
            if self._head_bytes > MAX_REQUEST_HEAD:
                log.debug("request head over %d bytes; closing", MAX_REQUEST_HEAD)
                if self.transport is not None:
                    self.transport.write(_TOO_LARGE)
                self.force_close()
                return
        parsed = self._request_count  # aiohttp counts request heads as it parses them
        super().data_received(data)
        if self._request_count != parsed:
            self._stop_timer()
            self._head_bytes = 0
            self._guard.busy(self)

    async def finish_response(
        self, request: web.BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        try:
            return await super().finish_response(request, resp, start_time)
        finally:
            self._answered += 1
            self._last_body = request.content
            if self._answered >= self._request_count and self.transport is not None:
                self._guard.waiting(self)

    def log_exception(self, *args: Any, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info")
        if isinstance(exc, HttpProcessingError):
            # Anyone can send a malformed head at will: no traceback, no log at INFO.
            log.debug("malformed request: %s", exc.message)
            return
        super().log_exception(*args, **kwargs)

    def _body_done(self) -> bool:
        """Whether bytes arriving now belong to a new request head, not an unread body."""
        is_eof = getattr(self._last_body, "is_eof", None)
        return is_eof is None or bool(is_eof())

    def _too_slow(self) -> None:
        self._head_timer = None
        log.debug("no request head within %g s; closing", self._guard.header_timeout)
        self.force_close()

    def _stop_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None


class GuardedSite(web.BaseSite):
    """A TCP listener whose connections are :class:`GuardedHandler`\\ s."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        guard: ConnectionGuard,
        options: dict[str, Any],
        *,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context)
        self._host = host
        self._port = port
        self._guard = guard
        self._options = options

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl_context is not None else "http"
        return f"{scheme}://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        manager = self._runner.server
        assert manager is not None
        loop = asyncio.get_running_loop()

        def connection() -> GuardedHandler:
            return GuardedHandler(self._guard, manager, loop=loop, **self._options)

        # A handshake is bounded like a request head: the guard only sees a connection once
        # its handshake is done.
        handshake = self._guard.header_timeout if self._ssl_context is not None else None
        self._server = await loop.create_server(
            connection,
            self._host,
            self._port,
            reuse_address=True,
            backlog=128,
            ssl=self._ssl_context,
            ssl_handshake_timeout=handshake,
        )
        unpace_listeners(self._server.sockets)


def quiet_accept_errors(loop: asyncio.AbstractEventLoop) -> None:
    """Report a failing ``accept()`` (out of descriptors) in one line, at most every
    :data:`ACCEPT_ERROR_EVERY` seconds; asyncio pauses the listener for a second meanwhile."""
    previous = loop.get_exception_handler()
    last = 0.0
    suppressed = 0

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        nonlocal last, suppressed
        if "accept()" not in str(context.get("message", "")):
            if previous is not None:
                previous(loop, context)
            else:
                loop.default_exception_handler(context)
            return
        now = time.monotonic()
        if now - last < ACCEPT_ERROR_EVERY:
            suppressed += 1
            return
        exc = context.get("exception")
        log.warning(
            "cannot accept connections: %s (%d more such failures since the last report)",
            getattr(exc, "strerror", None) or exc,
            suppressed,
        )
        last, suppressed = now, 0

    loop.set_exception_handler(handle)
