"""Sending and fetching files over freight's raw TCP protocol (docs/protocol.md).

Uploads: ``PUT`` (or ``RESUME`` of the id remembered in the
:class:`~freight.client.resume_store.ResumeStore`), then DATA frames whose payload goes from
the file to the socket with ``sendfile`` (never through Python), at most two windows past the
server's last ``ACK``. A worker thread hashes the file from disk meanwhile, for ``DONE``.
After any failure the next attempt asks the server where its durable copy ends and goes on
from there.

Downloads: a part file (:mod:`freight.client.partfile`, as for HTTP) plus ``GET`` from
its size. A zero-length ``GET`` first asks which
file the server has (size, SHA-256, name); if that is not the file the ``.part`` was started
from, the ``.part`` starts over, so two versions are never spliced. Payload is read by the
kernel straight into three reused 4 MiB buffers in turn: while one fills, the one before is
written (``pwrite``) in a worker thread and the one before that is hashed in another, so
receiving, writing and hashing overlap. The SHA-256 must match the server's before the file
gets its name.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import os
import socket
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TypeVar

from yarl import URL

from freight.client.download import MAX_RESTARTS, DownloadInfo, DownloadResult, StartCallback
from freight.client.errors import (
    ClientError,
    ConnectionFailed,
    DigestMismatch,
    LocalFileChanged,
    ProtocolViolation,
)
from freight.client.hashing import SplitHasher
from freight.client.http import CHUNK_SIZE, RetryBudget, RetryCallback, RetryPolicy, Timeouts
from freight.client.partfile import PartFile, local_name
from freight.client.resume_store import DownloadKey, DownloadState, ResumeStore, UploadKey
from freight.client.upload import ProgressCallback, UploadResult
from freight.client.writer import RECEIVE_BATCH, STALE_AFTER, PartSink
from freight.protocol.frames import (
    HEADER_SIZE,
    MAX_TOKEN,
    SERVER_FRAMES,
    Accepted,
    Ack,
    ControlFrame,
    DataChunk,
    Done,
    ErrorFrame,
    FileInfo,
    Finished,
    Frame,
    FrameDecoder,
    FrameError,
    Get,
    Hello,
    Put,
    Resume,
    Welcome,
    encode_data_header,
)

__all__ = ["TcpAddress", "TcpServerError", "download_tcp", "parse_tcp_url", "upload_tcp"]

NO_DIGEST = bytes(32)  # a FILE frame's SHA-256 when the server keeps none

DATA_FRAME = 4 * 1024 * 1024  # payload per DATA frame: one sendfile call, one stall check
HASH_GRACE = 15.0  # seconds to wait for the hash on an open connection (the server allows 60)
_CONTROL_BUFFER = 64 * 1024
_DATA_HEADER = HEADER_SIZE + 8  # a DATA frame's header and offset: what precedes its payload
RETRYABLE_CODES = frozenset({"ERR_UPLOAD_LOCKED", "ERR_OFFSET_MISMATCH", "ERR_TIMEOUT"})
_GONE_CODES = frozenset({"ERR_UPLOAD_NOT_FOUND", "ERR_UPLOAD_EXPIRED"})
T = TypeVar("T")


class TcpServerError(ClientError):
    """The server sent an ERROR frame; ``server_code`` is its stable code."""

    code = "ERR_SERVER"

    def __init__(self, frame: ErrorFrame, action: str) -> None:
        super().__init__(
            f"{action}: {frame.message or frame.code} ({frame.code})",
            server_code=frame.code,
            detail=frame.detail,
        )
        self.server_code = frame.code
        self.detail = frame.detail


@dataclass(frozen=True)
class TcpAddress:
    """``tcp://host:port`` and, for a file, ``/ID``."""

    host: str
    port: int
    file_id: str | None = None

    @property
    def root(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp://{host}:{self.port}"

    def file_url(self, file_id: str) -> str:
        return f"{self.root}/{file_id}"


def parse_tcp_url(text: str) -> TcpAddress:
    """Parse ``tcp://host:port`` or ``tcp://host:port/ID``; the port is required."""
    try:
        url = URL(text.strip())
        port = url.explicit_port
    except ValueError as exc:
        raise ClientError(f"not a valid URL: {text!r}") from exc
    if url.scheme != "tcp" or not url.host or port is None:
        raise ClientError(f"not a tcp://host:port URL: {text!r}")
    segments = [part for part in url.path.split("/") if part]
    if len(segments) > 1:
        raise ClientError(f"a tcp:// URL names at most a file id: {text!r}")
    return TcpAddress(url.host, port, segments[0] if segments else None)


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, TcpServerError):
        return exc.server_code in RETRYABLE_CODES
    return isinstance(exc, ConnectionFailed)


def _describe(exc: BaseException) -> str:
    return exc.message if isinstance(exc, ClientError) else str(exc) or type(exc).__name__


# one connection -----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _network(action: str, timeout: float) -> AsyncIterator[None]:
    """Network failures and silence become :class:`ConnectionFailed` (retried by callers)."""
    try:
        async with asyncio.timeout(timeout):
            yield
    except TimeoutError as exc:
        raise ConnectionFailed(f"{action}: the server stopped answering (timed out)") from exc
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise ConnectionFailed(f"{action}: {reason}") from exc


class _Link:
    """One connection to a freight TCP server, past the HELLO/WELCOME handshake."""

    def __init__(self, sock: socket.socket, timeouts: Timeouts) -> None:
        self.sock = sock
        self.timeouts = timeouts
        self.decoder = FrameDecoder(SERVER_FRAMES)
        self.frames: deque[Frame] = deque()
        self.control_buffer = bytearray(_CONTROL_BUFFER)
        self.welcome = Welcome(1, 1)

    @classmethod
    async def open(cls, address: TcpAddress, token: str | None, timeouts: Timeouts) -> _Link:
        raw_token = token.encode() if token is not None else b""
        if len(raw_token) > MAX_TOKEN:
            raise ClientError(f"the token is longer than {MAX_TOKEN} bytes")
        async with _network(f"cannot connect to {address.root}", timeouts.connect):
            sock = await _connect(address.host, address.port)
        link = cls(sock, timeouts)
        try:
            await link.send(Hello(token=raw_token).encode())
            welcome = await link.next_control("connecting")
            if not isinstance(welcome, Welcome):
                raise ProtocolViolation(f"expected WELCOME, got {type(welcome).__name__}")
            link.welcome = welcome
        except BaseException:
            link.close()
            raise
        return link

    def close(self) -> None:
        self.sock.close()

    async def send(self, data: bytes) -> None:
        # Frames are small: one that cannot leave for `stall` seconds means a stalled link.
        async with _network("sending", self.timeouts.stall):
            await asyncio.get_running_loop().sock_sendall(self.sock, data)

    async def send_file(self, file: IO[bytes], offset: int, count: int) -> int:
        """``count`` bytes of ``file`` from ``offset`` with ``sendfile``; fewer only if the
        file ended. Gives up when no byte could leave for ``stall`` seconds (asyncio's own
        ``sock_sendfile`` is the same loop, but a timeout could only bound the whole call,
        which a slow link makes long)."""
        if not hasattr(os, "sendfile"):  # pragma: no cover - Linux and macOS have it
            async with _network("sending", self.timeouts.stall):
                loop = asyncio.get_running_loop()
                return await loop.sock_sendfile(self.sock, file, offset, count)
        sent = 0
        while sent < count:
            try:
                moved = os.sendfile(self.sock.fileno(), file.fileno(), offset + sent, count - sent)
            except (BlockingIOError, InterruptedError):
                await self._writable()
                continue
            except OSError as exc:
                raise ConnectionFailed(f"sending: {exc.strerror or exc}") from exc
            if moved == 0:
                break  # the file ended early
            sent += moved
        return sent

    async def _writable(self) -> None:
        loop = asyncio.get_running_loop()
        ready = loop.create_future()
        fd = self.sock.fileno()
        loop.add_writer(fd, _resolve, ready)
        try:
            async with asyncio.timeout(self.timeouts.stall):
                await ready
        except TimeoutError as exc:
            stall = self.timeouts.stall
            raise ConnectionFailed(f"sending: nothing could be sent for {stall:g} s") from exc
        finally:
            loop.remove_writer(fd)

    async def receive(self, buffer: bytearray, patience: float | None = None) -> list[Frame]:
        """One read into ``buffer``, decoded; DATA in the result points into ``buffer``.
        ``patience``: seconds to wait (the read timeout by default)."""
        async with _network("receiving", patience or self.timeouts.read):
            count = await asyncio.get_running_loop().sock_recv_into(self.sock, buffer)
        return self._decode(buffer, count)

    def read_payload(self, buffer: memoryview) -> int | None:
        """One read that never waits. Within a DATA payload, the payload goes straight into
        ``buffer`` (no copy through the decoder) and its length is returned; between
        payloads, one header is read and decoded into :attr:`frames`, and 0 is returned
        (the read stops where a DATA header ends, so the control buffer never holds
        payload). None: nothing has arrived."""
        decoder = self.decoder
        if decoder.payload_left:
            count = self._read_now(buffer[: min(decoder.payload_left, len(buffer))])
            if count == 0:
                raise ConnectionFailed("the server closed the connection")
            if count is not None:
                decoder.skip_payload(count)
            return count
        held = decoder.buffered
        want = _DATA_HEADER - held if held < _DATA_HEADER else len(self.control_buffer)
        count = self._read_now(memoryview(self.control_buffer)[:want])
        if count is None:
            return None
        self.frames.extend(self._decode(self.control_buffer, count))
        return 0

    async def readable(self, until: float | None) -> bool:
        """Wait until bytes (or the end of the stream) can be read; False if the loop time
        ``until`` came first. Nothing is read here, so giving up early loses nothing (a
        cancelled ``sock_recv_into`` may have read bytes that are then lost)."""
        loop = asyncio.get_running_loop()
        ready = loop.create_future()
        fd = self.sock.fileno()
        loop.add_reader(fd, _resolve, ready)
        try:
            async with asyncio.timeout_at(until) as patience:
                # Called while payload is owed: silence for `stall` seconds is a stall.
                async with _network("receiving", self.timeouts.stall):
                    await ready
        except TimeoutError:
            if patience.expired():
                return False
            raise
        finally:
            loop.remove_reader(fd)
        return True

    def poll(self) -> None:
        """Decode whatever already arrived, without waiting (ACKs, an ERROR)."""
        count = self._read_now(memoryview(self.control_buffer))
        if count is not None:
            self.frames.extend(self._decode(self.control_buffer, count))

    def _read_now(self, view: memoryview) -> int | None:
        try:
            return self.sock.recv_into(view)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as exc:
            raise ConnectionFailed(f"receiving: {exc.strerror or exc}") from exc

    def _decode(self, buffer: bytearray, count: int) -> list[Frame]:
        if count == 0:
            # Mid-frame or not, a closed connection is worth another attempt.
            raise ConnectionFailed("the server closed the connection")
        try:
            return self.decoder.feed(memoryview(buffer)[:count])
        except FrameError as exc:
            raise ProtocolViolation(f"the server broke the protocol: {exc.message}") from exc

    async def next_control(self, action: str, patience: float | None = None) -> ControlFrame:
        """The next frame, which must be a control frame; an ERROR frame is raised.
        ``patience``: seconds to wait for it (the read timeout by default)."""
        while not self.frames:
            self.frames.extend(await self.receive(self.control_buffer, patience))
        frame = self.frames.popleft()
        if isinstance(frame, DataChunk):
            raise ProtocolViolation("the server sent DATA where none was expected")
        if isinstance(frame, ErrorFrame):
            raise TcpServerError(frame, action)
        return frame


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def _connect(host: str, port: int) -> socket.socket:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    failure: OSError = OSError(f"no address for {host}")
    for family, kind, proto, _, address in infos:
        sock = socket.socket(family, kind, proto)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, address)
        except OSError as exc:
            sock.close()
            failure = exc
            continue
        # Control frames are tiny and each waits for an answer: never delay them.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
    raise failure


async def _with_retries(budget: RetryBudget, attempt: Callable[[], Awaitable[T]]) -> T:
    while True:
        try:
            return await attempt()
        except Exception as exc:
            if not _retryable(exc):
                raise
            await budget.failed(_describe(exc))


# uploads ------------------------------------------------------------------------------------


async def upload_tcp(
    path: Path | str,
    server_url: str,
    *,
    token: str | None = None,
    progress: ProgressCallback | None = None,
    on_start: Callable[[int, int], None] | None = None,
    resume_store: ResumeStore | None = None,
    retry: RetryPolicy | None = None,
    on_retry: RetryCallback | None = None,
    timeouts: Timeouts | None = None,
    chunk_size: int = CHUNK_SIZE,
    parallel: int = 1,
    verify: bool = True,
) -> UploadResult:
    """Upload ``path`` to ``tcp://host:port``; resumable like :func:`upload_file`.

    One connection carries the whole file (``parallel`` is accepted for the uploader
    registry and ignored: one stream already runs at the loopback limit).
    ``verify=False`` does not hash the file: DONE carries 32 zero bytes and the result
    reports the server's SHA-256 unchecked (``verified`` False), for devices that cannot
    spare the CPU.
    """
    del chunk_size, parallel  # sendfile moves the payload; no read size to choose
    path = Path(path)
    if not path.is_file():
        raise ClientError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    address = parse_tcp_url(server_url)
    upload = _TcpUpload(
        path,
        address,
        token=token,
        store=resume_store,
        budget=RetryBudget(retry or RetryPolicy(), on_retry),
        progress=progress,
        on_start=on_start,
        timeouts=timeouts or Timeouts(),
    )
    return await (upload.run() if verify else upload.run_unverified())


class _TcpUpload:
    """The state of one :func:`upload_tcp` call."""

    def __init__(
        self,
        path: Path,
        address: TcpAddress,
        *,
        token: str | None,
        store: ResumeStore | None,
        budget: RetryBudget,
        progress: ProgressCallback | None,
        on_start: Callable[[int, int], None] | None,
        timeouts: Timeouts,
    ) -> None:
        self.path = path
        self.address = address
        self.token = token
        self.store = store
        self.budget = budget
        self.progress = progress
        self.on_start = on_start
        self.timeouts = timeouts
        self.key = UploadKey.for_file(path, address.root)
        self.size = self.key.size
        self.acked = 0
        self.resumed_from: int | None = None
        self.upload_id: str | None = None
        self.digest: asyncio.Future[bytes] | None = None

    async def run(self) -> UploadResult:
        hasher = SplitHasher(self.path, self.size)
        hasher.start()  # the whole file, from disk, while it is being sent
        try:
            finished = await _with_retries(self.budget, lambda: self._attempt(hasher))
            local = await self._digest(hasher)
        finally:
            await hasher.close()
            if self.digest is not None and not self.digest.done():
                self.digest.cancel()
                with contextlib.suppress(BaseException):
                    await self.digest
        self._forget()
        if finished.sha256 != local or finished.size != self.size:
            raise DigestMismatch(
                f"SHA-256 mismatch: the server stored {finished.sha256.hex()}, the local file is "
                f"{local.hex()}; the local file may have changed while it was sent",
                local=local.hex(),
                remote=finished.sha256.hex(),
            )
        return self._result(finished, local.hex(), verified=True)

    async def run_unverified(self) -> UploadResult:
        """Send without hashing: DONE carries zeros; the server's SHA-256 is reported."""
        self.digest = asyncio.get_running_loop().create_future()
        self.digest.set_result(NO_DIGEST)
        finished = await _with_retries(self.budget, lambda: self._attempt(None))
        self._forget()
        if finished.size != self.size:
            raise ClientError(f"the server stored {finished.size} bytes, not {self.size}")
        remote = finished.sha256.hex() if finished.sha256 != NO_DIGEST else ""
        return self._result(finished, remote, verified=False)

    def _result(self, finished: Finished, sha256: str, *, verified: bool) -> UploadResult:
        return UploadResult(
            url=self.address.file_url(finished.upload_id),
            name=self.path.name,
            size=self.size,
            sha256=sha256,
            verified=verified,
            resumed_from=self.resumed_from or 0,
        )

    async def _attempt(self, hasher: SplitHasher | None) -> Finished:
        while True:
            if self.digest is not None:
                await self.digest  # hashing was behind: it finishes before we reconnect
            link = await _Link.open(self.address, self.token, self.timeouts)
            try:
                reply = await self._locate(link)
                if isinstance(reply, Finished):
                    return reply  # finished by an earlier attempt whose answer was lost
                self._started(reply.offset)
                await self._send_data(link, reply.offset)
                if not await self._digest_ready(hasher):
                    continue  # hang up rather than hold a silent connection; RESUME later
                await link.send(Done(await self._digest(hasher)).encode())
                return await self._await_finished(link)
            except TcpServerError as exc:
                if exc.server_code in ("ERR_CHECKSUM_MISMATCH", "ERR_LENGTH_MISMATCH"):
                    self._forget()  # the server's copy is not this file: start afresh
                raise
            finally:
                link.close()

    def _digest(self, hasher: SplitHasher | None) -> asyncio.Future[bytes]:
        """The whole file's SHA-256, computed once whatever the number of attempts."""
        if self.digest is None:
            assert hasher is not None
            self.digest = asyncio.ensure_future(hasher.finish(self.size))
        return self.digest

    async def _digest_ready(self, hasher: SplitHasher | None) -> bool:
        """Wait a little for the hash; the server closes connections silent for a minute."""
        digest = self._digest(hasher)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(digest), HASH_GRACE)
        return digest.done()

    async def _locate(self, link: _Link) -> Accepted | Finished:
        """RESUME the remembered upload if the server still has it, else PUT a new one."""
        remembered = self.store.get_upload(self.key) if self.store else None
        upload_id = self.upload_id or (parse_tcp_url(remembered).file_id if remembered else None)
        if upload_id is not None:
            await link.send(Resume(upload_id).encode())
            try:
                reply = await link.next_control("resuming the upload")
            except TcpServerError as exc:
                if exc.server_code not in _GONE_CODES:
                    raise
                self._forget()
            else:
                return self._check_reply(reply)
            self.upload_id = None
        name = self.path.name.encode("utf-8", "replace").decode("utf-8")[:255]
        await link.send(Put(self.size, name).encode())
        reply = self._check_reply(await link.next_control("starting the upload"))
        self.upload_id = reply.upload_id
        if self.store is not None:
            self.store.put_upload(self.key, self.address.file_url(reply.upload_id))
        return reply

    def _check_reply(self, reply: ControlFrame) -> Accepted | Finished:
        if not isinstance(reply, Accepted | Finished):
            raise ProtocolViolation(f"expected ACCEPTED, got {type(reply).__name__}")
        if reply.size != self.size:
            self._forget()
            self.upload_id = None
            raise ProtocolViolation(
                f"the server's upload holds {reply.size} bytes, not {self.size}"
            )
        return reply

    async def _send_data(self, link: _Link, offset: int) -> None:
        """DATA from ``offset`` to the end, never more than two windows past the last ACK."""
        self.acked = offset
        window = link.welcome.window
        frame_size = min(DATA_FRAME, link.welcome.max_data)
        position = offset
        with self.path.open("rb") as file:
            while position < self.size:
                link.poll()
                self._take_acks(link)
                while position >= self.acked + 2 * window:
                    # An ACK is owed: the server has had a window's bytes to sync.
                    ack = await link.next_control("sending data", self.timeouts.stall)
                    self._acknowledge(ack)
                count = min(frame_size, self.size - position, self.acked + 2 * window - position)
                await link.send(encode_data_header(position, count))
                if await link.send_file(file, position, count) != count:
                    raise LocalFileChanged(f"{self.path} became shorter while it was sent")
                position += count
                self._report(position)

    def _take_acks(self, link: _Link) -> None:
        while link.frames:
            frame = link.frames.popleft()
            if isinstance(frame, ErrorFrame):
                raise TcpServerError(frame, "sending data")
            if isinstance(frame, DataChunk):
                raise ProtocolViolation("the server sent DATA during an upload")
            self._acknowledge(frame)

    def _acknowledge(self, frame: ControlFrame) -> None:
        if not isinstance(frame, Ack):
            raise ProtocolViolation(f"expected ACK, got {type(frame).__name__}")
        self.acked = max(self.acked, frame.offset)
        self.budget.reached(frame.offset)

    async def _await_finished(self, link: _Link) -> Finished:
        while True:
            frame = await link.next_control("finishing the upload")
            if isinstance(frame, Finished):
                return frame
            self._acknowledge(frame)

    def _started(self, offset: int) -> None:
        # Where a resume starts is the server's durable offset: progress if it moved, even
        # when the cut came before any ACK (the server keeps what it synced on a cut).
        self.budget.reached(offset)
        if self.resumed_from is None:
            self.resumed_from = offset
        if self.on_start is not None:
            self.on_start(self.size, offset)
        self._report(offset)

    def _report(self, done: int) -> None:
        if self.progress is not None:
            self.progress(done)

    def _forget(self) -> None:
        self.upload_id = None
        if self.store is not None:
            self.store.forget_upload(self.key)


# downloads ----------------------------------------------------------------------------------


async def download_tcp(
    url: str,
    output: Path | str | None = None,
    *,
    token: str | None = None,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
    on_start: StartCallback | None = None,
    resume_store: ResumeStore | None = None,
    retry: RetryPolicy | None = None,
    on_retry: RetryCallback | None = None,
    timeouts: Timeouts | None = None,
    chunk_size: int = CHUNK_SIZE,
) -> DownloadResult:
    """Download ``tcp://host:port/ID``; resumable and verified like :func:`download_file`."""
    address = parse_tcp_url(url)
    if address.file_id is None:
        raise ClientError(f"the URL names no file: {url!r} (expected tcp://host:port/ID)")
    download = _TcpDownload(
        address,
        address.file_id,
        token=token,
        store=resume_store,
        budget=RetryBudget(retry or RetryPolicy(), on_retry),
        progress=progress,
        on_start=on_start,
        timeouts=timeouts or Timeouts(),
        chunk_size=chunk_size,
    )
    target = await download.choose_target(None if output is None else Path(output), overwrite)
    return await download.run(target)


class _Restart(Exception):
    """The server's file is not the one the ``.part`` was started from."""


class _TcpDownload:
    """The state of one :func:`download_tcp` call."""

    def __init__(
        self,
        address: TcpAddress,
        file_id: str,
        *,
        token: str | None,
        store: ResumeStore | None,
        budget: RetryBudget,
        progress: ProgressCallback | None,
        on_start: StartCallback | None,
        timeouts: Timeouts,
        chunk_size: int,
    ) -> None:
        self.address = address
        self.file_id = file_id
        self.url = address.file_url(file_id)
        self.token = token
        self.store = store
        self.budget = budget
        self.progress = progress
        self.on_start = on_start
        self.timeouts = timeouts
        self.chunk_size = chunk_size
        self.target = Path()
        self.key = DownloadKey("", self.url)
        self.expected: DownloadState | None = None  # sha256 (hex, as the etag) and size
        self.position = 0  # bytes of the .part written
        self.received = 0  # bytes of the .part received (written, being written, or held)
        self.restarted = False

    async def _probe(self) -> FileInfo:
        """Which file the server has, without any of its bytes."""

        async def ask() -> FileInfo:
            link = await _Link.open(self.address, self.token, self.timeouts)
            try:
                return await self._request(link, 0, 0)
            finally:
                link.close()

        return await _with_retries(self.budget, ask)

    async def _request(self, link: _Link, offset: int, length: int | None) -> FileInfo:
        await link.send(Get(self.file_id, offset, length).encode())
        info = await link.next_control("fetching the file")
        if not isinstance(info, FileInfo):
            raise ProtocolViolation(f"expected FILE, got {type(info).__name__}")
        wanted = info.size - offset if length is None else length
        if info.offset != offset or info.length != min(wanted, info.size - offset):
            raise ProtocolViolation("the server answered GET with another range")
        return info

    async def choose_target(self, output: Path | None, overwrite: bool) -> Path:
        if output is not None and not output.is_dir():
            return output
        info = await self._probe()
        target = (output or Path.cwd()) / local_name(info.name or None, self.file_id)
        if os.path.lexists(target) and not overwrite:
            raise ClientError(
                f"{target} already exists; choose another name with -o or replace it with --force"
            )
        return target

    async def run(self, target: Path) -> DownloadResult:
        self.target = target
        part = PartFile(target)
        self.key = DownloadKey.for_part(part.path, self.url)
        try:
            resumed_from = self._resume_point(part.open())
            info, local = await self._fetch_all(part, resumed_from)
            # All zeros: the server keeps no digest (``--no-sha256``); nothing to check.
            verified = info.sha256 != NO_DIGEST
            if verified and local != info.sha256:
                part.discard()
                self._forget()
                raise DigestMismatch(
                    f"SHA-256 mismatch: the server advertises {info.sha256.hex()}, received "
                    f"{local.hex()}; the partial file was deleted",
                    local=local.hex(),
                    remote=info.sha256.hex(),
                )
            part.commit()
        finally:
            part.close()
        self._forget()
        return DownloadResult(
            url=self.url,
            path=target,
            size=info.size,
            sha256=local.hex(),
            verified=verified,
            resumed_from=0 if self.restarted else resumed_from,
            restarted=self.restarted,
        )

    def _resume_point(self, have: int) -> int:
        """Bytes of the part file worth keeping: only if we know which file they came from."""
        state = self.store.get_download(self.key) if self.store else None
        if state is None or have > state.size:
            return 0
        self.expected = state
        return have

    async def _fetch_all(self, part: PartFile, offset: int) -> tuple[FileInfo, bytes]:
        """Fill ``part`` from ``offset``; start over whenever the server's file changed."""
        fd = part.fd
        if offset == 0:
            part.truncate()
        self.position = offset
        for _ in range(MAX_RESTARTS + 1):
            hasher = SplitHasher(part.path, offset, chunk_size=self.chunk_size)
            hasher.start()
            try:
                info = await _with_retries(
                    self.budget, functools.partial(self._attempt, fd, hasher)
                )
                return info, await hasher.finish(info.size)
            except _Restart:
                pass
            finally:
                await hasher.close()
            part.truncate()
            offset, self.position, self.expected, self.restarted = 0, 0, None, True
            self._report(0)
        raise ClientError(f"the file keeps changing on the server ({MAX_RESTARTS} restarts)")

    async def _attempt(self, fd: int, hasher: SplitHasher) -> FileInfo:
        link = await _Link.open(self.address, self.token, self.timeouts)
        try:
            info = await self._request(link, 0, 0)
            self._check_same(info)
            offset = self.position
            self._started(info.size, offset)
            if offset < info.size:
                if (await self._request(link, offset, None)).sha256 != info.sha256:
                    raise _Restart("the file changed on the server")
                await self._receive(link, fd, hasher, info.size)
            return info
        finally:
            link.close()

    def _check_same(self, info: FileInfo) -> None:
        state = DownloadState(etag=info.sha256.hex(), size=info.size)
        if self.expected is not None and self.expected != state:
            raise _Restart("the file changed on the server")
        if self.expected is None and self.store is not None:
            self.store.put_download(self.key, state)
        self.expected = state

    async def _receive(self, link: _Link, fd: int, hasher: SplitHasher, size: int) -> None:
        """DATA until ``size``, into three large buffers in turn; each one filled is handed
        to the sink, which writes it while the one before is hashed and the next one fills."""
        buffers = [memoryview(bytearray(max(self.chunk_size, RECEIVE_BATCH))) for _ in range(3)]
        sink = _PartSink(fd, hasher, self._written)
        start = self.received = self.position
        buffer = buffers[0]
        try:
            # Frames that came with FILE point into the control buffer: copy their payload.
            early = list(link.frames)
            link.frames.clear()
            self._take_payload(early, link.decoder, buffer, start, size)
            for turn in itertools.count(1):
                await self._fill(link, buffer, start, size)
                full, start = DataChunk(start, buffer[: self.received - start]), self.received
                await sink.add([full])
                if self.received == size:
                    break
                buffer = buffers[turn % 3]
        finally:
            # Whatever arrived intact is kept; the next attempt resumes after it.
            if self.received > start:
                await sink.add([DataChunk(start, buffer[: self.received - start])])
            await sink.close()

    async def _fill(self, link: _Link, buffer: memoryview, start: int, size: int) -> None:
        """Receive into ``buffer`` (which holds from ``start``) until it is full, the file is
        complete, or the bytes in it have waited :data:`STALE_AFTER` for more (a slow or
        stalled link: they are written rather than held). Payload goes from the socket
        straight into the buffer, never through the decoder."""
        loop = asyncio.get_running_loop()
        stale_at = loop.time() + STALE_AFTER if self.received > start else None
        while self.received - start < len(buffer) and self.received < size:
            count = link.read_payload(buffer[self.received - start :])
            if count is None:
                if not await link.readable(stale_at):
                    return
            elif count:
                self.received += count
                if stale_at is None:
                    stale_at = loop.time() + STALE_AFTER
            else:
                frames = list(link.frames)
                link.frames.clear()
                self._take_payload(frames, link.decoder, buffer, start, size)

    def _take_payload(
        self,
        frames: Sequence[Frame],
        decoder: FrameDecoder,
        buffer: memoryview,
        start: int,
        size: int,
    ) -> None:
        """Copy the payload among ``frames`` to ``buffer`` (which holds from ``start``); an
        ERROR or any other frame ends the download, and so does a DATA frame (whole or
        still to come) that does not go on from what was received."""
        for frame in frames:
            if isinstance(frame, ErrorFrame):
                raise TcpServerError(frame, "downloading")
            if not isinstance(frame, DataChunk):
                raise ProtocolViolation(f"{type(frame).__name__} in the middle of a download")
            if frame.offset != self.received or frame.end > size:
                raise ProtocolViolation(f"DATA at {frame.offset}, expected {self.received}")
            buffer[self.received - start : frame.end - start] = frame.data
            self.received = frame.end
        if decoder.payload_left:
            offset = decoder.payload_offset
            if offset != self.received or offset + decoder.payload_left > size:
                raise ProtocolViolation(f"DATA at {offset}, expected {self.received}")

    def _written(self, position: int) -> None:
        if position > self.position:
            self.position = position
            self.budget.reached(position)
            self._report(position)

    def _started(self, size: int, offset: int) -> None:
        if self.on_start is not None:
            self.on_start(DownloadInfo(self.target, size, offset))
        self._report(offset)

    def _report(self, done: int) -> None:
        if self.progress is not None:
            self.progress(done)

    def _forget(self) -> None:
        if self.store is not None:
            self.store.forget_download(self.key)


class _PartSink(PartSink[Sequence[DataChunk]]):
    """Received DATA into the ``.part``: one batch per receive buffer (see :class:`PartSink`:
    three buffers in turn suffice)."""

    def __init__(self, fd: int, hasher: SplitHasher, on_written: Callable[[int], None]) -> None:
        super().__init__(on_written)
        self._fd = fd
        self._hasher = hasher

    async def add(self, chunks: Sequence[DataChunk] | None) -> None:
        await super().add(chunks or None)

    def write(self, batch: Sequence[DataChunk]) -> int:
        return _write(self._fd, batch)

    def hash(self, batch: Sequence[DataChunk]) -> None:
        _feed(self._hasher, batch)


def _write(fd: int, chunks: Sequence[DataChunk]) -> int:
    """Write chunks at their offsets; returns the end of the last one."""
    for chunk in chunks:
        view, position = chunk.data, chunk.offset
        while view:
            written = os.pwrite(fd, view, position)
            view, position = view[written:], position + written
    return chunks[-1].end


def _feed(hasher: SplitHasher, chunks: Sequence[DataChunk]) -> None:
    for chunk in chunks:
        hasher.feed(chunk.offset, chunk.data)
