"""Uploads over freight's raw TCP protocol: ``PUT`` or ``RESUME``, DATA, ACKs, ``DONE``.

``PUT`` (or ``RESUME`` of the id remembered in the
:class:`~freight.client.resume_store.ResumeStore`), then DATA frames whose payload goes from
the file to the socket with ``sendfile`` (never through Python), at most two windows past the
server's last ``ACK``. A worker thread hashes the file from disk meanwhile, for ``DONE``.
After any failure the next attempt asks the server where its durable copy ends and goes on
from there.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from pathlib import Path

from freight.client.errors import ClientError, DigestMismatch, LocalFileChanged, ProtocolViolation
from freight.client.hashing import SplitHasher
from freight.client.options import DEFAULTS, TransferOptions
from freight.client.rate import pace
from freight.client.resume_store import UploadKey
from freight.client.tcp_link import (
    NO_DIGEST,
    TcpAddress,
    TcpLink,
    TcpServerError,
    parse_tcp_url,
    with_retries,
)
from freight.client.upload import UploadResult, display_name, local_file
from freight.protocol.frames import (
    Accepted,
    Ack,
    ControlFrame,
    DataChunk,
    Done,
    ErrorFrame,
    Finished,
    Put,
    Resume,
    encode_data_header,
)
from freight.protocol.metadata import RELATIVE_PATH

__all__ = ["upload_tcp"]

DATA_FRAME = 4 * 1024 * 1024  # payload per DATA frame: one sendfile call, one stall check
HASH_GRACE = 15.0  # seconds to wait for the hash on an open connection (the server allows 60)
_GONE_CODES = frozenset({"ERR_UPLOAD_NOT_FOUND", "ERR_UPLOAD_EXPIRED"})


async def upload_tcp(
    path: Path | str,
    server_url: str,
    options: TransferOptions = DEFAULTS,
    *,
    on_start: Callable[[int, int], None] | None = None,
    parallel: int = 1,
    verify: bool = True,
    metadata: Mapping[str, str] | None = None,
) -> UploadResult:
    """Upload ``path`` to ``tcp://host:port``; resumable like :func:`upload_file`.

    One connection carries the whole file (``parallel`` is accepted for the uploader
    registry and ignored: one stream already runs at the loopback limit), and ``sendfile``
    moves the payload, so the options' ``chunk_size`` has no read size to choose.
    ``verify=False`` does not hash the file: DONE carries 32 zero bytes and the result
    reports the server's SHA-256 unchecked (``verified`` False), for devices that cannot
    spare the CPU. Of ``metadata`` only ``relativePath`` goes (as the PUT's name, flagged
    as a path): the protocol has no other field for it.
    """
    del parallel
    path = local_file(path)
    upload = _TcpUpload(path, parse_tcp_url(server_url), options, on_start)
    upload.relative_path = (metadata or {}).get(RELATIVE_PATH)
    return await (upload.run() if verify else upload.run_unverified())


class _TcpUpload:
    """The state of one :func:`upload_tcp` call."""

    def __init__(
        self,
        path: Path,
        address: TcpAddress,
        options: TransferOptions,
        on_start: Callable[[int, int], None] | None,
    ) -> None:
        self.path = path
        self.address = address
        self.token = options.token
        self.store = options.resume_store
        self.budget = options.budget()
        self.progress = options.progress
        self.on_start = on_start
        self.timeouts = options.timeouts
        self.key = UploadKey.for_file(path, address.root)
        self.size = self.key.size
        self.acked = 0
        self.resumed_from: int | None = None
        self.upload_id: str | None = None
        self.relative_path: str | None = None  # sent instead of the name when given
        self.digest: asyncio.Future[bytes] | None = None
        self.hasher: SplitHasher | None = None  # None: not hashing (run_unverified)

    async def run(self) -> UploadResult:
        # Hashed from disk behind the DATA sent (see SplitHasher.keep_up), from where each
        # attempt starts: a resume's prefix first.
        hasher = SplitHasher(self.path, 0)
        self.hasher = hasher
        try:
            finished = await with_retries(self.budget, lambda: self._attempt(hasher))
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
        finished = await with_retries(self.budget, lambda: self._attempt(None))
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
            link = await TcpLink.open(self.address, self.token, self.timeouts)
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

    async def _locate(self, link: TcpLink) -> Accepted | Finished:
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
        if self.relative_path is not None:
            put = Put(self.size, self.relative_path, is_path=True)
        else:
            put = Put(self.size, display_name(self.path)[:255])
        await link.send(put.encode())
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

    async def _send_data(self, link: TcpLink, offset: int) -> None:
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
                await pace(count)  # --limit-rate
                await link.send(encode_data_header(position, count))
                if await link.send_file(file, position, count) != count:
                    raise LocalFileChanged(f"{self.path} became shorter while it was sent")
                position += count
                self._report(position)
                if self.hasher is not None:
                    await self.hasher.keep_up(offset, position)

    def _take_acks(self, link: TcpLink) -> None:
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

    async def _await_finished(self, link: TcpLink) -> Finished:
        while True:
            # Kernel buffers may have taken the last megabytes without the server seeing
            # them: until it has acknowledged every byte, silence is a stalled link.
            patience = self.timeouts.stall if self.acked < self.size else None
            frame = await link.next_control("finishing the upload", patience)
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
