"""Downloads over freight's raw TCP protocol: ``GET`` into a part file, then verification.

A part file (:mod:`freight.client.partfile`, as for HTTP) plus ``GET`` from its size. A
zero-length ``GET`` first asks which file the server has (size, SHA-256, name); if that is
not the file the ``.part`` was started from, the ``.part`` starts over, so two versions are
never spliced. Payload is read by the kernel straight into three reused 4 MiB buffers in
turn: while one fills, the one before is written (``pwrite``) in a worker thread and the one
before that is hashed in another, so receiving, writing and hashing overlap. The SHA-256
must match the server's before the file gets its name.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
from collections.abc import Callable, Sequence
from pathlib import Path

from freight.client.download import (
    MAX_RESTARTS,
    DownloadInfo,
    DownloadResult,
    StartCallback,
    received_mismatch,
)
from freight.client.errors import ClientError, ProtocolViolation
from freight.client.hashing import SplitHasher
from freight.client.options import DEFAULTS, TransferOptions
from freight.client.partfile import PartFile, local_name, named_target
from freight.client.rate import pace
from freight.client.resume_store import DownloadKey, DownloadState
from freight.client.tcp_link import (
    NO_DIGEST,
    TcpAddress,
    TcpLink,
    TcpServerError,
    parse_tcp_url,
    with_retries,
)
from freight.client.writer import RECEIVE_BATCH, STALE_AFTER, PartSink, pwrite_all
from freight.protocol.frames import DataChunk, ErrorFrame, FileInfo, Frame, FrameDecoder, Get

__all__ = ["download_tcp"]


async def download_tcp(
    url: str,
    output: Path | str | None = None,
    options: TransferOptions = DEFAULTS,
    *,
    on_start: StartCallback | None = None,
    overwrite: bool = False,
) -> DownloadResult:
    """Download ``tcp://host:port/ID``; resumable and verified like :func:`download_file`."""
    address = parse_tcp_url(url)
    if address.file_id is None:
        raise ClientError(f"the URL names no file: {url!r} (expected tcp://host:port/ID)")
    download = _TcpDownload(address, address.file_id, options, on_start)
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
        options: TransferOptions,
        on_start: StartCallback | None,
    ) -> None:
        self.address = address
        self.file_id = file_id
        self.url = address.file_url(file_id)
        self.token = options.token
        self.store = options.resume_store
        self.budget = options.budget()
        self.progress = options.progress
        self.on_start = on_start
        self.timeouts = options.timeouts
        self.chunk_size = options.chunk_size
        self.target = Path()
        self.key = DownloadKey("", self.url)
        self.expected: DownloadState | None = None  # sha256 (hex, as the etag) and size
        self.position = 0  # bytes of the .part written
        self.received = 0  # bytes of the .part received (written, being written, or held)
        self.restarted = False

    async def _probe(self) -> FileInfo:
        """Which file the server has, without any of its bytes."""

        async def ask() -> FileInfo:
            link = await TcpLink.open(self.address, self.token, self.timeouts)
            try:
                return await self._request(link, 0, 0)
            finally:
                link.close()

        return await with_retries(self.budget, ask)

    async def _request(self, link: TcpLink, offset: int, length: int | None) -> FileInfo:
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
        name = local_name(info.name or None, self.file_id)
        return named_target(output, name, overwrite=overwrite)

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
                raise received_mismatch(info.sha256, local)
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
                info = await with_retries(self.budget, functools.partial(self._attempt, fd, hasher))
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
        link = await TcpLink.open(self.address, self.token, self.timeouts)
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

    async def _receive(self, link: TcpLink, fd: int, hasher: SplitHasher, size: int) -> None:
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

    async def _fill(self, link: TcpLink, buffer: memoryview, start: int, size: int) -> None:
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
                await pace(count)  # --limit-rate
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
        self.budget.answered()
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
        pwrite_all(fd, chunk.data, chunk.offset)
    return chunks[-1].end


def _feed(hasher: SplitHasher, chunks: Sequence[DataChunk]) -> None:
    for chunk in chunks:
        hasher.feed(chunk.offset, chunk.data)
