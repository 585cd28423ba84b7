"""Sending the missing chunks of one chunk-API upload, ``parallel`` at a time.

One reader walks the missing chunks in order (so the file's SHA-256 gets them in order) and
hands each to a sender with its digest and, when they fit :data:`HELD_CHUNKS_BUDGET`, its
bytes. Each chunk is PUT whole or, on a link that keeps losing whole pieces, in smaller
pieces (``Content-Range``, sized by :class:`~freight.client.chunk_status.PieceSizer`), each
acknowledged on its own. Each chunk retries on its own with backoff; a chunk that keeps
failing stops the others. After a lost PUT the chunk goes on from where the server's status
says its bytes end (a cut PUT keeps what arrived). The bytes acknowledged and those in
flight make the progress.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
from yarl import URL

from freight.client.chunk_reader import Chunk, ChunkReader
from freight.client.chunk_status import (
    PieceSizer,
    Remote,
    count_field,
    json_object,
    status_remote,
)
from freight.client.errors import ProtocolViolation, ServerError
from freight.client.filebody import BufferBody, FileBody
from freight.client.hashing import SplitHasher
from freight.client.http import RetryBudget, describe_error, is_retryable, server_error
from freight.client.options import ProgressCallback, TransferOptions
from freight.client.sendfile_http import (
    KeptConnections,
    can_sendfile,
    raw_server_error,
    send_file_request,
)

__all__ = ["HELD_CHUNKS_BUDGET", "ChunkSender", "UploadGone"]

log = logging.getLogger(__name__)

# Chunks are held in memory (read once) only while ``parallel + 1`` of them fit in this;
# otherwise (the server's default 10 MiB chunks, many streams) each is read twice and
# streamed through small reused buffers. Memory is the scarcer resource on the small boards
# freight runs on: a few MiB, never several whole large chunks.
HELD_CHUNKS_BUDGET = 16 * 1024 * 1024
# A digest that fails may be a bit flipped on the way (a bad proxy or NIC): worth a retry.
_RETRY_STATUSES = frozenset({422})


class UploadGone(Exception):
    """The server no longer has the upload (expired or deleted): start a new one."""


class _PieceOffset(Exception):
    """The server says chunk ``n``'s received bytes end elsewhere (a 409
    ``ERR_PIECE_OFFSET``): at ``at``, a file offset."""

    def __init__(self, at: int) -> None:
        super().__init__(f"the chunk's received bytes end at byte {at}")
        self.at = at


class ChunkSender:
    """PUTs chunks of ``path`` to one server's chunk API and counts what got through."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        path: Path,
        size: int,
        options: TransferOptions,
        *,
        budget: RetryBudget,
        parallel: int,
        chunk_digests: bool,
    ) -> None:
        self.session = session
        self.path = path
        self.size = size
        self.budget = budget  # the whole upload's: any acknowledged byte is progress
        self.policy = options.retry
        self.on_retry = options.on_retry
        self.progress = options.progress
        self.parallel = parallel
        self.read_size = options.chunk_size
        self.stall_timeout = options.timeouts.stall
        self.reader = ChunkReader(path, self.read_size, chunk_digests=chunk_digests)
        self.acknowledged = 0  # bytes the server has confirmed
        self.in_flight: dict[int, int] = {}  # chunk number -> bytes of it sent so far
        self.pieces = PieceSizer(1, None)  # replaced for each server upload
        self.sendfile = False  # whether chunk bodies go with sendfile (plain http)
        self.connections = KeptConnections()  # theirs, kept alive between chunks

    async def send_missing(self, remote: Remote, hasher: SplitHasher) -> None:
        """Read the missing chunks in order, each once, and PUT them ``parallel`` at a time.

        One reader walks the chunks (so the file's SHA-256 gets them in order) and hands each
        to a sender with its digest and, when they fit :data:`HELD_CHUNKS_BUDGET`, its bytes;
        buffers go back to the reader once their chunk is acknowledged, so at most
        ``parallel + 1`` chunks are held.
        """
        chunks = remote.to_send(self.size)
        senders = min(self.parallel, len(chunks))
        if not senders:
            return
        self.pieces = PieceSizer(remote.chunk_size, remote.min_piece)
        # Over plain http the kernel sends the chunks from the file (sendfile): holding them
        # would only read each byte once more.
        self.sendfile = can_sendfile(remote.url)
        held = not self.sendfile and (senders + 1) * remote.chunk_size <= HELD_CHUNKS_BUDGET
        free: asyncio.Queue[bytearray | None] = asyncio.Queue()
        for _ in range(senders + 1):
            free.put_nowait(None)  # None: allocate when first needed
        ready: asyncio.Queue[Chunk | None] = asyncio.Queue()

        first = chunks[0][0] * remote.chunk_size

        async def read() -> None:
            for n, spans in chunks:
                buffer = await free.get()
                start = n * remote.chunk_size
                span = (start, min(start + remote.chunk_size, self.size))
                if held and buffer is None:
                    buffer = bytearray(remote.chunk_size)
                chunk = await self.reader.read(
                    span, n, tuple(spans), buffer if held else None, hasher
                )
                ready.put_nowait(chunk)
                if not self.reader.chunk_digests:
                    # The file's hash reads each chunk just after it went to a sender, from
                    # the page cache, and holds the reads back when it falls behind.
                    await hasher.keep_up(first, span[1])
            for _ in range(senders):
                ready.put_nowait(None)

        async def send() -> None:
            while (chunk := await ready.get()) is not None:
                clean = await self._send_chunk(remote, chunk)
                # A buffer whose request failed may still be queued in a dead transport
                # (asyncio queues memoryviews): never overwrite it, allocate another.
                free.put_nowait(chunk.buffer if clean else None)

        tasks = [asyncio.ensure_future(read())]
        tasks += [asyncio.ensure_future(send()) for _ in range(senders)]
        try:
            await _run_together(tasks)
        finally:
            self.connections.close()

    async def _send_chunk(self, remote: Remote, chunk: Chunk) -> bool:
        """PUT one chunk, in pieces if need be, until the server has it; True if no attempt
        failed."""
        url = remote.url / "chunks" / str(chunk.n)
        # The upload exists by now: a server gone quiet gets the whole budget.
        budget = RetryBudget(self.policy, self.on_retry, answered=True)
        clean = True
        # The last attempt was lost on the way, or answered as a duplicate: the server may
        # hold more of the chunk than this client knows.
        after_cut = False
        losses = 0  # whole pieces of this chunk lost in a row
        cap = chunk.end - chunk.start  # this chunk's largest piece until one gets through
        for span_start, span_end in chunk.spans:
            position = span_start
            while position < span_end:
                end = min(span_end, position + min(self.pieces.size, cap))
                sent = [0]  # bytes of this attempt handed to the connection
                try:
                    duplicate = await self._put(
                        url, chunk, position, end, sent, after_cut=after_cut
                    )
                except _PieceOffset as exc:
                    # An attempt whose answer was lost got through, or the server lacks bytes
                    # it had: go on from where its bytes end.
                    clean = False
                    if not chunk.start <= exc.at <= span_end or exc.at == position:
                        raise ProtocolViolation(f"chunk {chunk.n}: {exc}") from exc
                    if exc.at > position:
                        self._acknowledge(exc.at - position, budget)
                    else:
                        await budget.failed(f"chunk {chunk.n}: {exc}")
                    position = exc.at
                except Exception as exc:
                    clean = False
                    self.report()
                    if isinstance(exc, ServerError) and exc.http_status in (404, 410):
                        raise UploadGone() from exc
                    if not _chunk_retryable(exc):
                        raise
                    lost_link = after_cut = not isinstance(exc, ServerError)
                    if lost_link:  # the link lost the piece
                        losses += 1
                        cap = self.pieces.lost(end - position, sent[0], losses)
                        if cap < end - position:
                            losses = 0
                            budget.progressed()  # smaller pieces: a new try, not a repeat
                    await budget.failed(f"chunk {chunk.n}: {describe_error(exc)}")
                    if lost_link and sent[0] and not self.reader.chunk_digests:
                        # The server keeps what arrived of a cut request without a digest:
                        # send only what the chunk still lacks.
                        kept = await self._kept_end(remote, chunk, position, span_end)
                        if kept > position:
                            losses, cap = 0, chunk.end - chunk.start
                            self._acknowledge(kept - position, budget)
                            position = kept
                else:
                    after_cut = duplicate
                    losses, cap = 0, chunk.end - chunk.start
                    self.pieces.got_through(end - position)
                    self._acknowledge(end - position, budget)
                    position = end
        return clean

    async def _kept_end(self, remote: Remote, chunk: Chunk, position: int, span_end: int) -> int:
        """Where the server's bytes of ``chunk`` end, from ``position`` (what it had
        acknowledged) up to ``span_end``: its status after a cut. ``position`` when the
        status cannot be had; the next attempt then learns it the slow way."""
        try:
            async with asyncio.timeout(self.stall_timeout):
                async with self.session.get(remote.url) as resp:
                    if resp.status != 200:
                        await resp.read()
                        return position
                    status = status_remote(await json_object(resp), remote.url, self.size)
        except (TimeoutError, aiohttp.ClientError, ProtocolViolation) as exc:
            log.info("chunk %d: no status after a cut: %s", chunk.n, describe_error(exc))
            return position
        if status is None or status.chunk_size != remote.chunk_size:
            return position
        kept = _received_end(status, chunk)
        return position if kept is None else min(max(kept, position), span_end)

    def _acknowledge(self, count: int, budget: RetryBudget) -> None:
        self.acknowledged += count
        budget.progressed()
        self.budget.progressed()
        self.report()

    async def _put(
        self, url: URL, chunk: Chunk, start: int, end: int, sent: list[int], *, after_cut: bool
    ) -> bool:
        """PUT bytes ``[start, end)`` of ``chunk`` (all of it, or a piece); ``sent[0]``
        follows how many went out. Returns whether the server had them all already.

        ``after_cut``: the previous attempt was lost, and the server may still be recording
        what it kept of it (the status asked since may be too early). This one then waits for
        ``100 Continue`` before sending its body, and names its range even for a whole chunk:
        a server that finds more bytes kept says where they end (409) before any is sent."""
        loop = asyncio.get_running_loop()
        n = chunk.n
        # As for tus: give up on a link where neither reading nor writing has moved lately.
        async with asyncio.timeout_at(loop.time() + self.stall_timeout) as stall:

            def moved(position: int) -> None:
                stall.reschedule(loop.time() + self.stall_timeout)
                self.in_flight[n] = sent[0] = position - start
                self.report()

            headers = {
                "Content-Type": "application/octet-stream",
                "Content-Length": str(end - start),
            }
            ranged = after_cut and self.pieces.takes_pieces
            content_range = chunk.content_range(start, end, always=ranged)
            if content_range is not None:
                headers["Content-Range"] = content_range
            digest = await self.reader.digest_of(chunk, start, end)
            if digest is not None:
                headers["Content-Digest"] = f"sha-256=:{base64.b64encode(digest).decode()}:"
            view = chunk.view(start, end)
            if view is None and self.sendfile:
                try:
                    span = (start, end)
                    return await self._put_sendfile(url, chunk, span, headers, moved, after_cut)
                finally:
                    self.in_flight.pop(n, None)
            body: BufferBody | FileBody
            if view is not None:
                body = BufferBody(view, start, piece_size=self.read_size, on_sent=moved)
            else:
                body = FileBody(self.path, start, end, chunk_size=self.read_size, on_read=moved)
            try:
                put = self.session.put(url, data=body, headers=headers, expect100=after_cut)
                async with put as resp:
                    if resp.status == 409:
                        raise await _conflict(resp, chunk)
                    if resp.status != 200:
                        raise await server_error(resp, f"sending chunk {n}")
                    answer = await json_object(resp)
                return answer.get("duplicate") is True
            except Exception:
                if body.error is not None:
                    raise body.error from None  # a local read failure, not a network one
                raise
            finally:
                body.close()
                # Whatever happened (even cancellation), this attempt's bytes no longer move.
                self.in_flight.pop(n, None)

    async def _put_sendfile(
        self,
        url: URL,
        chunk: Chunk,
        span: tuple[int, int],
        headers: dict[str, str],
        moved: ProgressCallback,
        after_cut: bool,
    ) -> bool:
        """:meth:`_put` with the body sent from the file by the kernel (plain http)."""
        start, end = span
        resp = await send_file_request(
            self.session,
            "PUT",
            url,
            headers,
            self.path,
            start,
            end,
            on_sent=moved,
            stall_timeout=self.stall_timeout,
            expect100=after_cut,
            connections=self.connections,
        )
        if resp.status == 409:
            raise _conflict_of(resp.json_object(), chunk)
        if resp.status != 200:
            raise raw_server_error(resp, f"sending chunk {chunk.n}")
        return resp.json_object().get("duplicate") is True

    def report(self) -> None:
        if self.progress is not None:
            self.progress(self.acknowledged + sum(self.in_flight.values()))


async def _run_together(tasks: Sequence[asyncio.Future[None]]) -> None:
    """Wait for every task; the first failure cancels the rest and is raised."""
    if not tasks:
        return
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
            raise result


async def _conflict(resp: aiohttp.ClientResponse, chunk: Chunk) -> Exception:
    """A 409 to a chunk PUT: where the chunk's received bytes end, if that is what it says."""
    return _conflict_of(await json_object(resp), chunk)


def _conflict_of(data: dict[str, Any], chunk: Chunk) -> Exception:
    if data.get("code") == "ERR_PIECE_OFFSET":
        return _PieceOffset(chunk.start + count_field(data, "chunk_offset"))
    return ServerError(
        f"sending chunk {chunk.n}: {data.get('message')} (HTTP 409)",
        http_status=409,
        server_code=str(data.get("code")),
    )


def _received_end(status: Remote, chunk: Chunk) -> int | None:
    """Where the server's received run of ``chunk`` (from its first byte) ends, by its
    status; None if the status does not say."""
    if not any(first <= chunk.n < end for first, end in status.missing):
        return chunk.end
    lacking = [start for start, end in status.missing_bytes if chunk.start <= start < chunk.end]
    if not lacking:
        return chunk.start  # missing whole
    if len(lacking) > 1:
        return None  # not one run from the chunk's first byte: not this server's rule
    return lacking[0]


def _chunk_retryable(exc: BaseException) -> bool:
    if isinstance(exc, ServerError) and exc.http_status in _RETRY_STATUSES:
        return True
    return is_retryable(exc)
