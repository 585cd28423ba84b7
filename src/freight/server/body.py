"""Streaming a request body into an upload writer.

A large body with a Content-Length is taken straight from the socket. Where nothing needs
to see its bytes it is spliced socket → pipe → file (:mod:`freight.server.splice`), never
entering Python. Otherwise the connection's transport is handed to a
:class:`asyncio.BufferedProtocol` whose ``get_buffer`` is the writer's free space, so the
kernel copies each byte once into memory that goes to the disk as it is, with no bytes
object per read, no parser and no stream buffer in between (aiohttp's body stream costs
more CPU than the copy itself). aiohttp's HTTP parser then still expects the body, so such
a connection is closed after its response; a client opens a new one for its next request,
which is cheap beside the megabytes moved.

Smaller bodies, and bodies without a length, go through aiohttp's body stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from freight.core.writer import UploadWriter
from freight.errors import ClientDisconnected, InvalidHeader, UploadTooLarge
from freight.server.ingest import WriterFeed
from freight.server.logs import BYTES_IN
from freight.server.metrics import body_counter
from freight.server.splice import BodySplicer, open_splice
from freight.server.stall import Direction, watch_progress
from freight.server.state import SETTINGS, SPLICERS

__all__ = [
    "DIRECT_MIN",
    "check_fits",
    "close_after_response",
    "content_length",
    "has_body",
    "interrupter",
    "stream_body",
]

# Below this much unread body, the connection's reuse is worth more than the faster path.
DIRECT_MIN = 4 * 1024 * 1024

_CLOSE_AFTER: web.RequestKey[bool] = web.RequestKey("close_after_response", bool)

Counter = Callable[[int], None]


def content_length(request: web.Request) -> int | None:
    value = request.headers.get("Content-Length")
    if value is None:
        return None
    if not value.isdigit():
        raise InvalidHeader("Content-Length must be a non-negative integer")
    return int(value)


# A request with any of these waits for the upload's digest in the answer that completes it.
DIGEST_HEADERS = ("Want-Repr-Digest", "Repr-Digest", "Content-Digest", "Upload-Checksum")


def digest_wanted(request: web.Request) -> bool:
    """Whether the answer that completes an upload must carry its digest: a client that
    asks for it (RFC 9530 ``Want-Repr-Digest``) or checks what it sends (a checksum or
    digest field) waits for it; others are answered once the bytes are stored, while the
    digest settles (reads of the upload wait for that)."""
    return any(name in request.headers for name in DIGEST_HEADERS)


def has_body(request: web.Request) -> bool:
    length = content_length(request)
    return bool(length) or (length is None and request.body_exists)


def check_fits(offset: int, request: web.Request, limit: int | None) -> None:
    """Refuse a body that the headers already say is too long, before reading any of it."""
    length = content_length(request)
    if limit is not None and length is not None and offset + length > limit:
        raise UploadTooLarge(
            f"{length} bytes at offset {offset} run past the upload's length of {limit}"
        )


def interrupter(request: web.Request) -> Callable[[], None]:
    """Ends this request by dropping its connection: how a newer request takes over."""

    def interrupt() -> None:
        if request.transport is not None:
            request.transport.abort()

    return interrupt


def close_after_response(request: web.Request) -> bool:
    """Whether this request's connection must close once answered (its body was taken)."""
    return bool(request.get(_CLOSE_AFTER, False))


async def stream_body(
    request: web.Request,
    writer: UploadWriter,
    on_bytes: Counter | None = None,
    *,
    skipped: int = 0,
) -> None:
    """Feed the whole body to ``writer``; ``on_bytes`` counts bytes as they arrive.
    ``skipped``: the caller read (and dropped) the body's first bytes already.

    A body that stalls (see :mod:`freight.server.stall`) raises :class:`Stalled` with its
    connection closed; what the writer made durable is kept.
    """
    count = _both(body_counter(request), on_bytes) if on_bytes else body_counter(request)
    if request.content.is_eof():
        await _read_stream(request, writer, count)
        return
    settings = request.app[SETTINGS]
    async with watch_progress(
        request.transport, Direction.RECEIVE, settings.idle_timeout, settings.min_rate
    ):
        unread = _unread_length(request, writer) - skipped
        if unread >= DIRECT_MIN and _can_take_transport(request):
            await _read_directly(request, writer, count, skipped)
        else:
            await _read_stream(request, writer, count)


def _both(first: Counter, second: Counter) -> Counter:
    def count(nbytes: int) -> None:
        first(nbytes)
        second(nbytes)

    return count


def _unread_length(request: web.Request, writer: UploadWriter) -> int:
    length = content_length(request)
    if length is None or request.headers.get("Transfer-Encoding"):
        return 0
    return length - (writer.position - writer.start)


def _can_take_transport(request: web.Request) -> bool:
    transport = request.transport
    if transport is None or transport.is_closing():
        return False
    # TLS transports re-frame the stream; only plain sockets are taken over.
    return transport.get_extra_info("sslcontext") is None


async def _read_stream(request: web.Request, writer: UploadWriter, count: Counter) -> None:
    content = request.content
    while True:
        try:
            chunk = await content.readany()
        except (ConnectionError, HttpProcessingError) as exc:
            raise ClientDisconnected(
                f"the body ended early at byte {writer.position}: {exc}"
            ) from exc
        if not chunk:
            return
        count(len(chunk))
        await writer.write(chunk)


async def _read_directly(
    request: web.Request, writer: UploadWriter, count: Counter, skipped: int
) -> None:
    content = request.content
    declared = content_length(request)
    assert declared is not None
    length = declared - skipped
    end = writer.start + length
    if writer.limit is not None and end > writer.limit:
        raise UploadTooLarge(f"the body runs past byte {writer.limit}, where this upload ends")
    # Whatever aiohttp parsed already waits in its stream (or in its paused parser, which
    # reading releases); take it all before the socket changes hands.
    buffered: list[bytes] = []
    while piece := content.read_nowait(-1):
        buffered.append(piece)
    transport = cast(asyncio.Transport, request.transport)
    transport.pause_reading()
    request[_CLOSE_AFTER] = True
    remaining = length - sum(map(len, buffered))
    taken = 0  # off the socket past aiohttp, which counts only what it parsed

    def tally(nbytes: int) -> None:
        nonlocal taken
        taken += nbytes
        count(nbytes)

    try:
        for piece in buffered:
            count(len(piece))
            await writer.write(piece)
        splice = open_splice(request.app.get(SPLICERS), writer, transport, tally)
        if splice is not None:
            await BodySplicer(transport, splice).receive(remaining)
            return
        receiver = _DirectReceiver(writer, remaining, transport, transport.get_protocol(), tally)
        transport.set_protocol(receiver)
        try:
            await receiver.receive()
        finally:
            receiver.detach()
    finally:
        content.feed_eof()  # so aiohttp does not wait for the rest of a body it never sees
        request[BYTES_IN] = content.total_bytes + taken


class _DirectReceiver(asyncio.BufferedProtocol):
    """Holds a connection's transport while the rest of one request body arrives."""

    def __init__(
        self,
        writer: UploadWriter,
        remaining: int,
        transport: asyncio.Transport,
        previous: asyncio.BaseProtocol,
        count: Counter,
    ) -> None:
        self._remaining = remaining
        self._transport = transport
        self._previous = previous
        self._count = count
        self._done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._feed = WriterFeed(writer, hold=self._hold, release=self._release, fail=self._finish)
        self._attached = True

    async def receive(self) -> None:
        if self._remaining == 0:
            return
        self._transport.resume_reading()
        await self._done
        await self._feed.settle()

    def detach(self) -> None:
        """Give the transport back to aiohttp, which closes it after the response."""
        if not self._attached:
            return
        self._attached = False
        self._feed.cancel()
        self._hold()
        self._transport.set_protocol(self._previous)

    # asyncio.BufferedProtocol ----------------------------------------------------------

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._feed.space(self._remaining)

    def buffer_updated(self, nbytes: int) -> None:
        self._remaining -= nbytes
        self._count(nbytes)
        self._feed.fed(nbytes)
        if self._remaining == 0:
            self._hold()
            self._finish(None)

    def eof_received(self) -> bool:
        self._finish(self._ended_early())
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish(self._ended_early())
        # aiohttp tracks its connections and must hear of the loss itself.
        self._previous.connection_lost(exc)

    # internals ---------------------------------------------------------------------------

    def _ended_early(self) -> ClientDisconnected:
        return ClientDisconnected(f"the body ended early at byte {self._feed.writer.position}")

    def _hold(self) -> None:
        if not self._transport.is_closing():
            self._transport.pause_reading()

    def _release(self) -> None:
        if self._attached and not self._done.done():
            self._transport.resume_reading()

    def _finish(self, exc: BaseException | None) -> None:
        if self._done.done():
            return
        if exc is None:
            self._done.set_result(None)
        else:
            self._hold()
            self._done.set_exception(exc)
