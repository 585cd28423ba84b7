"""The chunk API's ``PUT /api/uploads/{id}/chunks/{n}``: one chunk, or a piece of one,
into the upload (the rules are in :mod:`freight.server.chunks`).

A PUT cut midway keeps what arrived, as tus does, unless it carries a ``Content-Digest``
(part of a body cannot be checked against it). A whole chunk PUT of a chunk partly received
reads and drops the bytes held already and writes the rest, so a client that knows no
pieces can retry a cut chunk whole. ``Expect: 100-continue`` is answered only once the body
is wanted: after the claim is taken, when what a cut request kept (perhaps recorded by
another node as it let go) is known, so a duplicate or a refused piece costs no body bytes.
"""

from __future__ import annotations

from aiohttp import HttpVersion11, web
from aiohttp.http_exceptions import HttpProcessingError

from freight.core import UploadEngine, UploadSession, UploadWriter
from freight.core.writer import RequestChecksum
from freight.errors import (
    ClientDisconnected,
    FreightError,
    LengthMismatch,
    RangeAlreadyReceived,
    UnsupportedMediaType,
    UploadTooLarge,
)
from freight.server.body import content_length, interrupter, stream_body
from freight.server.chunk_layout import (
    POLICY,
    Piece,
    chunk_checksum,
    parse_chunk_number,
    require_layout,
)
from freight.server.errors import PROTOCOL_KEY
from freight.server.metrics import METRICS
from freight.server.state import ENGINE

__all__ = ["WIRE_BYTES", "expect_when_ready", "put_chunk"]

# A chunk sent as a form would have its multipart framing written into the file.
_FORM_TYPES = ("multipart/", "application/x-www-form-urlencoded")
# How often a chunk PUT looks again when bytes it was to write got recorded meanwhile.
_LOOKS = 3
# Bytes of an already received prefix read (and dropped) at a time.
_SKIP_READ = 256 * 1024

_CONTINUE_LATER: web.RequestKey[bool] = web.RequestKey("freight.chunk_continue_later", bool)
"""Set while a request that sent ``Expect: 100-continue`` has not been asked for its body."""

WIRE_BYTES: web.AppKey[dict[str, int]] = web.AppKey("freight.chunk_wire_bytes")
"""Every chunk body byte received per upload since start-up, duplicates included."""


async def put_chunk(request: web.Request) -> web.Response:
    request[PROTOCOL_KEY] = "chunks"
    requests = request.app[METRICS].chunk_requests
    try:
        response, duplicate = await _put_chunk(request)
    except FreightError:
        requests.labels("rejected").inc()
        raise
    finally:
        if request.get(_CONTINUE_LATER):
            # Answered before the body was asked for: the client sends none of it, so the
            # connection cannot carry another request.
            request.protocol.close()
    requests.labels("duplicate" if duplicate else "stored").inc()
    return response


async def expect_when_ready(request: web.Request) -> None:
    """``Expect: 100-continue`` on a chunk PUT: the ``100 Continue`` goes out only once the
    body is wanted (:func:`_continue`), after the claim is taken, so a duplicate, or bytes a
    cut request turns out to have kept, are answered before any of the body is sent."""
    expect = request.headers.get("Expect", "")
    if request.version != HttpVersion11:
        return
    if expect.lower() != "100-continue":
        raise web.HTTPExpectationFailed(text=f"Unknown Expect: {expect}")
    request[_CONTINUE_LATER] = True


async def _continue(request: web.Request) -> None:
    """Ask for the body, if the client waits to be asked."""
    if request.get(_CONTINUE_LATER):
        request[_CONTINUE_LATER] = False
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0


async def _put_chunk(request: web.Request) -> tuple[web.Response, bool]:
    engine = request.app[ENGINE]
    upload_id = request.match_info["upload_id"]
    session = await engine.get(upload_id)
    layout = require_layout(session)
    n = parse_chunk_number(request.match_info["n"])
    piece = layout.piece(n, request.headers.get("Content-Range"), POLICY.min_piece_on(engine.blobs))
    _check_body_headers(request, piece)
    checksum = chunk_checksum(request.headers.get("Content-Digest"))
    counter = _WireCounter(request.app, upload_id)
    kept = None if session.is_finished else layout.check_piece(piece, session.received)
    for look in range(1, _LOOKS + 1):
        if kept is None:
            break
        try:
            session = await _write_chunk(request, engine, piece, kept, checksum, counter)
            break
        except RangeAlreadyReceived:
            # Another request recorded some of these bytes between our look and our claim
            # (a cut one keeping what it got, or a twin of this one): look again, as long
            # as none of the body was read.
            if counter.count or look == _LOOKS:
                raise
            session = await engine.get(upload_id)
            kept = layout.check_piece(piece, session.received)
    duplicate = kept is None
    if duplicate and not request.get(_CONTINUE_LATER):
        await _drain(request, piece.length, counter)
    body = {
        "n": n,
        "duplicate": duplicate,
        "chunk_complete": session.is_finished
        or session.received.covers(piece.chunk_start, piece.chunk_end),
        "received_bytes": session.received.total(),
        "size": session.length,
        "wire_bytes": request.app[WIRE_BYTES].get(upload_id, 0),
    }
    return web.json_response(body), duplicate


def _check_body_headers(request: web.Request, piece: Piece) -> None:
    """Refuse what the headers already show is wrong, before reading any of the body."""
    content_type = request.headers.get("Content-Type", "").strip().lower()
    if content_type.startswith(_FORM_TYPES):
        raise UnsupportedMediaType("send the chunk as the raw body (application/octet-stream)")
    declared = content_length(request)
    if declared is not None and declared != piece.length:
        raise LengthMismatch(
            f"{piece.describe()} is {piece.length} bytes, not {declared}",
            chunk_length=piece.length,
        )


class _WireCounter:
    """Counts body bytes as they arrive, for ``wire_bytes``, the metrics and ``count``
    (this request's)."""

    def __init__(self, app: web.Application, upload_id: str) -> None:
        self._totals = app[WIRE_BYTES]
        self._metric = app[METRICS].chunk_body_bytes
        self._upload_id = upload_id
        self.count = 0

    def add(self, count: int) -> None:
        self.count += count
        self._totals[self._upload_id] = self._totals.get(self._upload_id, 0) + count
        self._metric.inc(count)


async def _write_chunk(
    request: web.Request,
    engine: UploadEngine,
    piece: Piece,
    kept: int,
    checksum: RequestChecksum | None,
    counter: _WireCounter,
) -> UploadSession:
    """Write ``piece`` but its first ``kept`` bytes (received already: read and dropped).

    What arrives before a cut is kept, as tus keeps it, so the chunk's retry sends only the
    rest; a body of the wrong length keeps nothing, nor does one with a ``Content-Digest``
    unless all of it matches. The written bytes start where the chunk's received run ends,
    so they extend it.
    """
    start, end = piece.start + kept, piece.end
    upload_id = request.match_info["upload_id"]
    async with engine.writer(
        upload_id,
        start,
        end=end,
        sequential=False,
        checksum=checksum,
        interrupt=interrupter(request),
    ) as writer:
        try:
            await _continue(request)
            if kept:
                await _skip(request, kept, counter, checksum)
            await _stream(request, writer, end, counter, kept)
            return await writer.commit(expected_end=end)
        except LengthMismatch:
            # A body that ended (or ran on) cleanly at the wrong length was not cut: it is a
            # malformed request, and none of it counts.
            writer.yield_from(start)
            raise


async def _skip(
    request: web.Request, count: int, counter: _WireCounter, checksum: RequestChecksum | None
) -> None:
    """Read and drop the body's first ``count`` bytes; a digest of the body still covers them."""
    left = count
    while left:
        data = await _read_up_to(request, min(left, _SKIP_READ), count - left)
        if not data:
            raise LengthMismatch(f"the body has {count - left} bytes; {count} were expected")
        counter.add(len(data))
        if checksum is not None:
            checksum.hasher.update(data)
        left -= len(data)


async def _read_up_to(request: web.Request, size: int, position: int) -> bytes:
    try:
        return await request.content.read(size)
    except (ConnectionError, HttpProcessingError) as exc:
        raise ClientDisconnected(f"the body ended early at byte {position}: {exc}") from exc


async def _next_piece(request: web.Request, position: int) -> bytes:
    try:
        return await request.content.readany()
    except (ConnectionError, HttpProcessingError) as exc:
        raise ClientDisconnected(f"the body ended early at byte {position}: {exc}") from exc


async def _stream(
    request: web.Request, writer: UploadWriter, end: int, counter: _WireCounter, skipped: int
) -> None:
    try:
        await stream_body(request, writer, counter.add, skipped=skipped)
    except UploadTooLarge as exc:
        raise LengthMismatch(f"the body runs past its end at byte {end}") from exc


async def _drain(request: web.Request, length: int, counter: _WireCounter) -> None:
    """Read a duplicate chunk's body without keeping it, checking only its length."""
    got = 0
    while piece := await _next_piece(request, got):
        counter.add(len(piece))
        got += len(piece)
        if got > length:
            raise LengthMismatch(f"the body has more than the {length} bytes expected")
    if got != length:
        raise LengthMismatch(f"the body has {got} bytes; {length} were expected")
