"""Noticing a connection that stops moving while bytes are owed.

A body being received or a download being sent is *stalled* when, for ``idle`` seconds,
fewer than ``min_rate * idle`` bytes moved. The measure is the kernel's own count for the
socket (``TCP_INFO``: bytes received from the peer, bytes it acknowledged), sampled a few
times per ``idle``: no hook in any data path, so the same watch serves aiohttp's body
stream, a body read into the writer's buffers, a spliced body (whose bytes Python never
sees) and ``sendfile`` downloads.

Slowness on our side never counts: while received bytes wait unread in the socket (the
disk is behind, reading is paused) or nothing waits to be sent (the disk is slow to read),
the window starts again.

On a stall, the ``async with`` block's current await is cancelled, the connection is reset
(what the kernel still queued for the peer is dropped) and :class:`Stalled` is raised from
the block, so the caller ends the request in its own way (keeping what was durable). Where
``TCP_INFO`` is unavailable (not Linux, not TCP) the watch does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import fcntl
import socket
import struct
import sys
import termios
from collections.abc import AsyncIterator, Callable
from typing import Final

from freight.errors import ClientDisconnected

__all__ = ["Direction", "Stalled", "watch_progress"]

# struct tcp_info (linux/tcp.h): tcpi_bytes_acked and tcpi_bytes_received, both __u64.
_TCP_INFO_SIZE: Final = 256
_BYTES_ACKED_AT: Final = 120
_BYTES_RECEIVED_AT: Final = 128
_SIOCOUTQ: Final = 0x5411  # bytes sent but not yet acknowledged (TIOCOUTQ)
_CHECKS_PER_WINDOW: Final = 4
_RESET_ON_CLOSE: Final = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close sends RST


class Direction(enum.Enum):
    RECEIVE = "receive"
    SEND = "send"


class Stalled(ClientDisconnected):
    """The peer moved too few bytes for too long; the connection is closed."""

    code = "ERR_STALLED"
    status = 408


@contextlib.asynccontextmanager
async def watch_progress(
    transport: asyncio.Transport | None,
    direction: Direction,
    idle: float | None,
    min_rate: int = 0,
) -> AsyncIterator[None]:
    """Raise :class:`Stalled` from the block (and abort ``transport``) on a stall."""
    sock = transport.get_extra_info("socket") if transport is not None else None
    if transport is None or sock is None or not idle or idle <= 0 or _counter(sock) is None:
        yield
        return
    loop = asyncio.get_running_loop()
    watch: _Watch | None = None
    try:
        async with asyncio.timeout(None) as deadline:
            expire = lambda: deadline.reschedule(loop.time())  # noqa: E731
            watch = _Watch(sock, direction, idle, min_rate, expire)
            try:
                yield
            finally:
                watch.stop()
    except TimeoutError:
        if watch is None or not watch.stalled:
            raise
        _reset(transport, sock)
        raise Stalled(watch.message()) from None
    if watch.stalled:  # the block swallowed the cancellation; still a stall
        _reset(transport, sock)
        raise Stalled(watch.message())


def _reset(transport: asyncio.Transport, sock: socket.socket) -> None:
    """Close a stalled connection with a reset. A plain close would leave the kernel sending
    what is queued (a download's send buffer: up to 16 MiB) to a peer that takes a few KiB
    at a time, for minutes after we gave up on it; a reset drops it at once."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_ON_CLOSE)
    transport.abort()


class _Watch:
    def __init__(
        self,
        sock: socket.socket,
        direction: Direction,
        idle: float,
        min_rate: int,
        expire: Callable[[], None],
    ) -> None:
        self._sock = sock
        self._direction = direction
        self._idle = idle
        self._min_bytes = max(1, int(min_rate * idle))
        self._expire = expire
        self._loop = asyncio.get_running_loop()
        self.stalled = False
        self._since = self._loop.time()
        self._mark = _counter(sock, direction) or 0
        self._handle = self._loop.call_later(idle / _CHECKS_PER_WINDOW, self._check)

    def stop(self) -> None:
        self._handle.cancel()

    def message(self) -> str:
        verb = "received" if self._direction is Direction.RECEIVE else "acknowledged"
        return f"fewer than {self._min_bytes} bytes {verb} in {self._idle:g} s; closing"

    def _check(self) -> None:
        now = self._loop.time()
        moved = _counter(self._sock, self._direction)
        if moved is None:  # the socket is gone; whoever awaits it hears so
            return
        if moved - self._mark >= self._min_bytes or self._our_side_is_slow():
            self._since, self._mark = now, moved
        elif now - self._since >= self._idle:
            self.stalled = True
            self._expire()
            return
        self._handle = self._loop.call_later(self._idle / _CHECKS_PER_WINDOW, self._check)

    def _our_side_is_slow(self) -> bool:
        if self._direction is Direction.RECEIVE:
            return _queued(self._sock, termios.FIONREAD) > 0
        return _queued(self._sock, _SIOCOUTQ) == 0


def _counter(sock: socket.socket, direction: Direction = Direction.RECEIVE) -> int | None:
    if sys.platform != "linux" or sock.type != socket.SOCK_STREAM or sock.fileno() < 0:
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_SIZE)
    except OSError:
        return None
    at = _BYTES_RECEIVED_AT if direction is Direction.RECEIVE else _BYTES_ACKED_AT
    if len(info) < at + 8:
        return None
    return int(struct.unpack_from("Q", info, at)[0])


def _queued(sock: socket.socket, request: int) -> int:
    try:
        answer = fcntl.ioctl(sock.fileno(), request, bytes(4))
    except OSError:
        return 0
    return int.from_bytes(answer, sys.byteorder)
