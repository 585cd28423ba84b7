"""Sending a local file over freight's WebSocket protocol (docs/websocket.md), resumably.

One attempt is one connection: ``resume`` the upload remembered for this file (or ``start``
a new one), stream binary frames as far as the server's credit allows while a second task
reads its grants, then send ``done`` with the local SHA-256 and wait for ``finished``. After
any failure the next attempt resumes at the server's durable offset, so a cut costs at most
the bytes in flight beyond it, which the credit bounds. The file is read a block of frames
ahead into two reused buffers by a worker thread that also feeds the SHA-256; the prefix a
resume skips is hashed from disk meanwhile (see :mod:`freight.client.hashing`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from pathlib import Path

import aiohttp
from yarl import URL

from freight.client.errors import (
    ClientError,
    ConnectionFailed,
    DigestMismatch,
    ProtocolViolation,
    ServerError,
)
from freight.client.hashing import SplitHasher
from freight.client.http import describe_error, is_retryable
from freight.client.options import DEFAULTS, TransferOptions
from freight.client.rate import pace
from freight.client.resume_store import UploadKey
from freight.client.upload import UploadResult, display_name, local_file
from freight.client.urls import file_id_from_url, server_root
from freight.client.ws_sending import BlockReader, SendWindow
from freight.protocol.metadata import RELATIVE_PATH
from freight.protocol.ws_messages import (
    Credit,
    Done,
    ErrorReply,
    Finished,
    InvalidMessage,
    Ready,
    Resume,
    ServerMessage,
    Start,
    build_message,
    parse_server_message,
)

__all__ = ["upload_file_ws", "ws_endpoint"]

log = logging.getLogger(__name__)

# The server's messages are a few hundred bytes; anything near this is not freight.
_MAX_SERVER_MESSAGE = 64 * 1024
# aiohttp masks a frame by copying it twice into new objects. Up to 128 KiB, malloc takes
# them from its heap and reuses the memory; at 256 KiB it maps fresh pages for them, and the
# page faults cost the client about 0.5 CPU-seconds per GiB. The server reads 256 KiB at a
# time whatever the frame size, so smaller frames cost it next to nothing.
_FRAME_SIZE = 128 * 1024
_READ_BLOCK = 1024 * 1024  # read and hashed in one go by a worker thread: whole frames
_RESTART_CODES = frozenset({"ERR_UPLOAD_NOT_FOUND", "ERR_UPLOAD_EXPIRED"})
_HANDSHAKE_REASONS = {
    401: "the server wants a valid token (--token or FREIGHT_TOKEN)",
    403: "the server refused this WebSocket (another origin?)",
    404: "this server does not offer WebSocket uploads",
}


async def upload_file_ws(
    path: Path | str,
    server_url: str,
    options: TransferOptions = DEFAULTS,
    *,
    on_start: Callable[[int, int], None] | None = None,
    parallel: int = 1,
    metadata: Mapping[str, str] | None = None,
) -> UploadResult:
    """Upload ``path`` to the server at ``server_url`` over a WebSocket (``/api/ws``).

    Arguments and result are those of :func:`freight.client.upload.upload_file`; the
    options' ``chunk_size`` caps the frames sent, which are at most 128 KiB anyway (see
    :data:`_FRAME_SIZE`; the server may lower it too). ``parallel`` is
    accepted and ignored: one connection with credit flow control already fills the link.
    """
    del parallel
    path = local_file(path)
    endpoint = ws_endpoint(server_url)
    key = UploadKey.for_file(path, str(endpoint))
    async with options.session() as session:
        upload = _WsUpload(session, path, key, endpoint, options, on_start)
        # Of ``metadata`` the protocol carries the folder path (``start``'s relative_path).
        upload.relative_path = (metadata or {}).get(RELATIVE_PATH)
        return await upload.run()


def ws_endpoint(server_url: str) -> URL:
    """``<server root>/api/ws``, whatever form of the server's URL was given."""
    root = server_root(server_url)
    return root.with_path(root.path.rstrip("/") + "/api/ws")


class _ConnectionLost(ConnectionFailed):
    """The WebSocket ended before ``finished``: worth another attempt."""


class _StartOver(Exception):
    """The remembered upload is gone or belongs to another file: start a new one now."""


class _WsUpload:
    """The state of one :func:`upload_file_ws` call, across its connections."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        path: Path,
        key: UploadKey,
        endpoint: URL,
        options: TransferOptions,
        on_start: Callable[[int, int], None] | None,
    ) -> None:
        self.session = session
        self.path = path
        self.relative_path: str | None = None
        self.key = key
        self.size = key.size
        self.endpoint = endpoint
        self.store = options.resume_store
        self.budget = options.budget()
        self.progress = options.progress
        self.on_start = on_start
        self.frame_size = min(options.chunk_size, _FRAME_SIZE)
        self.read_timeout = options.timeouts.read
        self.stall_timeout = options.timeouts.stall
        self.hasher: SplitHasher | None = None
        self.resumed_from: int | None = None
        self.acknowledged = 0  # highest offset the server has said is durable
        self.upload_url: str | None = None  # the upload this call started or resumed
        self.local_digest = ""  # known once every byte was read

    async def run(self) -> UploadResult:
        try:
            finished = await self._attempts()
            local = (await self._hasher_from(0).finish(self.size)).hex()
        finally:
            if self.hasher is not None:
                await self.hasher.close()
        self._forget()
        if finished.sha256 != local or finished.size != self.size:
            raise DigestMismatch(
                f"SHA-256 mismatch: the server stored {finished.sha256} ({finished.size} "
                f"bytes), the local file is {local}; it may have changed while it was sent",
                local=local,
                remote=finished.sha256,
            )
        return UploadResult(
            url=str(self.endpoint.join(URL(finished.url))),
            name=self.path.name,
            size=self.size,
            sha256=local,
            verified=True,
            resumed_from=self.resumed_from or 0,
        )

    async def _attempts(self) -> Finished:
        while True:
            try:
                return await self._attempt()
            except _StartOver:
                continue  # the remembered id was forgotten: the next attempt starts afresh
            except DigestMismatch:
                self._forget()  # that upload can never finish; the next run starts afresh
                raise
            except Exception as exc:
                if not _retryable(exc):
                    raise
                await self.budget.failed(describe_error(exc))

    async def _attempt(self) -> Finished:
        try:
            async with self.session.ws_connect(
                self.endpoint,
                max_msg_size=_MAX_SERVER_MESSAGE,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=5.0),
            ) as ws:
                opened = await self._open(ws)
                if isinstance(opened, Finished):
                    return opened
                return await self._exchange(ws, opened)
        except aiohttp.WSServerHandshakeError as exc:
            reason = _HANDSHAKE_REASONS.get(exc.status, exc.message)
            raise ServerError(
                f"opening the WebSocket: {reason} (HTTP {exc.status})", http_status=exc.status
            ) from None

    # opening ------------------------------------------------------------------------------

    async def _open(self, ws: aiohttp.ClientWebSocketResponse) -> Ready | Finished:
        """Send ``resume`` or ``start``; returns ``ready`` (or ``finished`` for a resume)."""
        # This call's own upload first: without a resume store it is the only memory of it.
        remembered = self.upload_url
        if remembered is None and self.store is not None:
            remembered = self.store.get_upload(self.key)
        upload_id = file_id_from_url(URL(remembered)) if remembered else None
        if upload_id is not None:
            await ws.send_str(build_message(Resume(id=upload_id, max_frame=self.frame_size)))
        else:
            start = Start(
                name=display_name(self.path),
                size=self.size,
                max_frame=self.frame_size,
                relative_path=self.relative_path,
            )
            await ws.send_str(build_message(start))
        reply = await self._next_reply(ws)
        if isinstance(reply, ErrorReply):
            if upload_id is not None and reply.code in _RESTART_CODES:
                log.info("remembered upload %s is gone; starting a new one", upload_id)
                self._forget()
                raise _StartOver
            raise _server_error(reply, "opening the upload")
        if isinstance(reply, Finished) and upload_id is not None:
            return reply
        if not isinstance(reply, Ready):
            raise ProtocolViolation(f'the server answered "{reply.op}" to the opening message')
        if reply.size != self.size or reply.offset > reply.size:
            if upload_id is None:
                raise ProtocolViolation(f"the server created an upload of {reply.size} bytes")
            self._forget()
            raise _StartOver
        if upload_id is None:
            self.upload_url = str(self.endpoint.join(URL(reply.url)))
            if self.store is not None:
                self.store.put_upload(self.key, self.upload_url)
        self._opened_at(reply.offset)
        return reply

    def _opened_at(self, offset: int) -> None:
        if self.resumed_from is None:
            self.resumed_from = offset
            if self.on_start is not None:
                self.on_start(self.size, offset)
        self._acknowledge(offset)
        self._report(offset)

    def _hasher_from(self, offset: int) -> SplitHasher:
        """The one hasher of this call, started at the first offset the server reported."""
        if self.hasher is None:
            self.hasher = SplitHasher(self.path, offset, chunk_size=_READ_BLOCK)
            self.hasher.start()
        return self.hasher

    # streaming ----------------------------------------------------------------------------

    async def _exchange(self, ws: aiohttp.ClientWebSocketResponse, ready: Ready) -> Finished:
        """Send data and ``done`` while reading credit; returns the server's ``finished``."""
        self.budget.answered()  # the server is there: a later outage gets the whole budget
        window = SendWindow(ready.offset + ready.credit)
        reader = asyncio.ensure_future(self._read_replies(ws, window))
        sender = asyncio.ensure_future(self._send_data(ws, ready, window))
        watchdog = asyncio.ensure_future(self._watch(window))
        try:
            # Until the server's answer, or a failure: the watchdog, asleep for up to the stall
            # timeout, must not hold up an upload that has finished.
            while not reader.done():
                running = {task for task in (reader, sender, watchdog) if not task.done()}
                await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                if watchdog.done():
                    watchdog.result()
                if sender.done() and sender.exception() is not None:
                    break
            if not reader.done() and _retryable(sender.exception() or Exception()):
                # The connection failed under the sender; the server's reason, if it gave
                # one (an error message before closing), is on its way: prefer it.
                await asyncio.wait({reader}, timeout=1.0)
            if reader.done():
                return reader.result()
            sender.result()
            raise AssertionError("unreachable: the sender ended without the reader")
        finally:
            for task in (reader, sender, watchdog):
                task.cancel()
            await asyncio.gather(reader, sender, watchdog, return_exceptions=True)

    async def _watch(self, window: SendWindow) -> None:
        """Raise once nothing moved for ``stall_timeout`` while data was owed: no frame
        went out (sending blocked, or credit awaited) and no message came in. A link that
        stops forwarding without closing is given up on then, not after minutes. Sending
        ``done`` is not the end of that: the kernel's buffers may hold megabytes the server
        never saw, so the watch lasts until the server has acknowledged every byte."""
        loop = asyncio.get_running_loop()
        while not window.done_sent or self.acknowledged < self.size:
            idle = loop.time() - window.moved_at
            if idle >= self.stall_timeout:
                raise _ConnectionLost(f"no progress for {idle:.0f} s: the link stalled")
            await asyncio.sleep(self.stall_timeout - idle)

    async def _send_data(
        self, ws: aiohttp.ClientWebSocketResponse, ready: Ready, window: SendWindow
    ) -> None:
        hasher = self._hasher_from(ready.offset)
        frame = min(ready.max_frame, self.frame_size)
        block = frame * max(1, _READ_BLOCK // frame)  # whole frames
        reader = BlockReader(self.path, block, hasher)
        position = ready.offset
        try:
            pending = reader.read_at(position, min(block, self.size - position))
            while position < self.size:
                view = await pending
                end = position + len(view)
                if end < self.size:
                    pending = reader.read_at(end, min(block, self.size - end))
                for start in range(0, len(view), frame):
                    data = view[start : start + frame]
                    await window.room_until(position + len(data))
                    await pace(len(data))  # --limit-rate
                    # aiohttp takes any bytes-like object at runtime; its hint says bytes.
                    await ws.send_bytes(data)  # type: ignore[arg-type]
                    window.moved()
                    position += len(data)
                    self._report(position)
        finally:
            reader.close()
        # Normally every byte went through the hasher by now. After a resume its disk reader
        # may still be hashing the prefix: rather than go quiet (the server drops idle
        # connections), finish without a SHA-256 and compare the server's afterwards.
        expected = None
        if hasher.hashed == self.size:
            self.local_digest = expected = (await hasher.finish(self.size)).hex()
        window.done_sent = True
        await ws.send_str(build_message(Done(sha256=expected)))

    async def _read_replies(
        self, ws: aiohttp.ClientWebSocketResponse, window: SendWindow
    ) -> Finished:
        while True:
            reply = await self._next_reply(ws)
            window.moved()
            if isinstance(reply, Credit):
                window.grant(reply.offset + reply.credit)
                self._acknowledge(reply.offset)
            elif isinstance(reply, Finished) and window.done_sent:
                return reply
            elif isinstance(reply, ErrorReply):
                raise _server_error(reply, "sending data", self.local_digest)
            else:
                raise ProtocolViolation(f'the server sent "{reply.op}" in the middle of the data')

    async def _next_reply(self, ws: aiohttp.ClientWebSocketResponse) -> ServerMessage:
        msg = await ws.receive(timeout=self.read_timeout)
        if msg.type is aiohttp.WSMsgType.TEXT:
            try:
                return parse_server_message(msg.data)
            except InvalidMessage as exc:
                raise ProtocolViolation(f"the server sent a bad message: {exc.message}") from exc
        if msg.type is aiohttp.WSMsgType.BINARY:
            raise ProtocolViolation("the server sent binary data")
        code = ws.close_code
        raise _ConnectionLost(f"the server closed the WebSocket (code {code})")

    # bookkeeping --------------------------------------------------------------------------

    def _acknowledge(self, offset: int) -> None:
        self.acknowledged = max(self.acknowledged, offset)
        self.budget.reached(offset)

    def _report(self, done: int) -> None:
        if self.progress is not None:
            self.progress(done)

    def _forget(self) -> None:
        self.upload_url = None
        if self.store is not None:
            self.store.forget_upload(self.key)


def _server_error(reply: ErrorReply, action: str, local: str = "") -> ClientError:
    if reply.code == "ERR_CHECKSUM_MISMATCH":
        remote = str(reply.details.get("sha256", ""))
        message = f"SHA-256 mismatch: the server stored {remote}, the local file is {local}"
        return DigestMismatch(message, local=local, remote=remote)
    return ServerError(
        f"{action}: {reply.message} ({reply.code})",
        http_status=reply.status,
        server_code=reply.code,
    )


def _retryable(exc: BaseException) -> bool:
    """Transport failures and "try again later" answers; never a refusal or a local error."""
    if isinstance(exc, _ConnectionLost | ConnectionResetError):
        return True
    return is_retryable(exc)
