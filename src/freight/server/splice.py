"""Moving the rest of a request body from its socket into the file, without reading it.

When nothing needs to see the bytes (no request checksum: the engine hashes uploads behind
the writers, from the page cache), a large body goes socket → pipe → file with
``splice(2)``, in one thread that does nothing else for that body: it waits for the socket
with ``poll``, moves what arrived into a pipe, and from the pipe to its offset in the file.
Bytes never enter Python, and no byte crosses between threads (handing each pipe-load to
another thread cost half as much CPU again as the splicing itself, in measurements here).

The event loop hears of progress every :data:`REPORT_EVERY` bytes: the writer counts the
bytes as written (checkpoints then record them as usual) and, if the upload's hash falls
too far behind, tells the thread to wait for it.

The connection's transport is paused meanwhile; the thread reads a duplicate of its socket,
so a transport closed under it (a take-over aborts it) cannot hand the descriptor number to
another connection. The transport's protocol is swapped for this one so that an abort or a
lost connection still stops the thread.

A bounded pool of such threads (:class:`Splicers`) serves the whole server; a body that
finds them all busy is read through memory buffers instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import select
import socket
import sys
import termios
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Final

from freight.config import FsyncPolicy
from freight.core.blobs import PipeTarget
from freight.core.pipes import SplicePipe
from freight.errors import ClientDisconnected

if TYPE_CHECKING:
    from collections.abc import Callable

    from freight.core.writer import UploadWriter

__all__ = ["REPORT_EVERY", "BodySplicer", "SocketSplice", "Splicers", "open_splice"]

log = logging.getLogger(__name__)

REPORT_EVERY: Final = 4 * 1024 * 1024
_SPLICERS: Final = 8
# How long the thread waits for a pipe-load to queue before it takes what a slower sender
# (under 20 MiB/s) has sent: a fast one fills the pipe well within it.
_LOAD_WAIT_MS: Final = 50


class Splicers:
    """The threads that splice bodies; at most ``size`` bodies at once."""

    def __init__(self, size: int = _SPLICERS) -> None:
        self.pool = ThreadPoolExecutor(size, thread_name_prefix="freight-splice")
        self._size = size
        self._busy = 0

    @property
    def available(self) -> bool:
        return self._busy < self._size

    def shutdown(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    async def track(self, done: asyncio.Future[int]) -> int:
        self._busy += 1
        try:
            return await asyncio.shield(done)
        finally:
            self._busy -= 1


class SocketSplice:
    """Moves bytes from one socket into one writer's file, a run at a time.

    Making one takes a pipe and descriptors (OSError when the system has none to spare);
    :meth:`close` gives them back.
    """

    def __init__(
        self,
        splicers: Splicers,
        writer: UploadWriter,
        sock: int,
        count: Callable[[int], None],
        *,
        idle_timeout: float | None = None,
    ) -> None:
        self._splicers = splicers
        self._writer = writer
        self._count = count
        self._job = _SpliceJob(
            sock,
            writer.part,
            sync_each=writer.fsync is FsyncPolicy.ALWAYS,
            report=self._report_soon,
            idle_timeout=idle_timeout,
        )
        self._loop = asyncio.get_running_loop()
        self._reported = 0
        self._waiting_for_hash: asyncio.Task[None] | None = None

    @property
    def end_of_stream(self) -> bool:
        """The client shut its side of the connection during the last run."""
        return self._job.end_of_stream

    async def move(self, length: int) -> int:
        """Move ``length`` bytes to the writer's position; returns how many arrived.

        Fewer arrive only when the socket ends (:attr:`end_of_stream`) or :meth:`stop` is
        called; a failed socket raises ClientDisconnected, a failed disk FreightError, a
        socket silent for the idle timeout TimeoutError.
        """
        job = self._job
        await self._writer.settle()
        self._reported = start = self._writer.position
        done = self._loop.run_in_executor(self._splicers.pool, job.run, start, start + length)
        try:
            await self._splicers.track(done)
        except OSError as exc:
            raise ClientDisconnected(f"the connection failed at byte {job.end}: {exc}") from exc
        finally:
            if not done.done():
                job.stop()
                await asyncio.wait([done])  # the thread must let go of the descriptors
            if self._waiting_for_hash is not None:
                self._waiting_for_hash.cancel()
            self._progress(job.end)
        return job.end - start

    def stop(self) -> None:
        """End the current run, and any later one, soon (the connection is gone)."""
        self._job.stop()

    def close(self) -> None:
        """Only once no run is under way."""
        self._job.close()

    def _report_soon(self, end: int) -> None:
        """Called in the splicing thread."""
        self._loop.call_soon_threadsafe(self._progress, end)

    def _progress(self, end: int) -> None:
        if end <= self._reported:
            return
        self._count(end - self._reported)
        self._reported = end
        self._writer.placed(end)
        if self._waiting_for_hash is None and self._writer.hash_trails(end):
            self._job.pause()
            self._waiting_for_hash = asyncio.ensure_future(self._resume_after_hash(end))

    async def _resume_after_hash(self, end: int) -> None:
        try:
            await self._writer.let_hash_near(end)
        finally:
            self._waiting_for_hash = None
            self._job.resume()


def open_splice(
    splicers: Splicers | None,
    writer: UploadWriter,
    transport: asyncio.BaseTransport | None,
    count: Callable[[int], None],
    *,
    idle_timeout: float | None = None,
) -> SocketSplice | None:
    """A splice from ``transport``'s socket into ``writer``'s file if one can be had now:
    a free thread, a writer that needs no look at the bytes, a plain socket and a pipe."""
    if splicers is None or not splicers.available or not writer.can_splice:
        return None
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None:
        return None
    try:
        return SocketSplice(splicers, writer, sock.fileno(), count, idle_timeout=idle_timeout)
    except OSError as exc:
        log.info("receiving through memory, not a pipe: %s", exc)
        return None


class BodySplicer(asyncio.Protocol):
    """Splices the rest of a request body from ``transport``'s socket into the file."""

    def __init__(self, transport: asyncio.Transport, splice: SocketSplice) -> None:
        self._transport = transport
        self._previous = transport.get_protocol()
        self._splice = splice

    async def receive(self, remaining: int) -> None:
        """Move ``remaining`` bytes; raises ClientDisconnected if the body ends early."""
        self._transport.set_protocol(self)
        try:
            moved = await self._splice.move(remaining)
        finally:
            self._transport.set_protocol(self._previous)
            self._splice.close()
        if self._splice.end_of_stream:
            # The client shut its side: like aiohttp on an early end, close ours too.
            self._transport.close()
        if moved < remaining:
            raise ClientDisconnected(f"the body ended {remaining - moved} bytes early")

    # asyncio.Protocol: the paused transport reports only its end ------------------------

    def connection_lost(self, exc: Exception | None) -> None:
        self._splice.stop()
        # aiohttp tracks its connections and must hear of the loss itself.
        self._previous.connection_lost(exc)


class _SpliceJob:
    """The thread's side: socket → pipe → file from ``start`` to ``end``."""

    def __init__(
        self,
        sock: int,
        part: object,
        *,
        sync_each: bool,
        report: Callable[[int], None],
        idle_timeout: float | None = None,
    ) -> None:
        if not isinstance(part, PipeTarget):
            raise OSError("this storage cannot take bytes from a pipe")
        self._part = part
        self._sync_each = sync_each
        self._report = report
        self._idle_ms = None if idle_timeout is None else int(idle_timeout * 1000)
        self.end = 0  # bytes up to here are in the file
        self.end_of_stream = False
        self._low_water = 1
        self._stopped = False
        self._go = threading.Event()
        self._go.set()
        self._pipe = SplicePipe()
        try:
            # A wake-up for poll(), and a duplicate of the socket: closing the transport under
            # the thread cannot hand the descriptor number to another connection.
            self._wake_read, self._wake_write = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
            try:
                self._sock = socket.socket(fileno=os.dup(sock))
            except OSError:
                os.close(self._wake_read)
                os.close(self._wake_write)
                raise
        except OSError:
            self._pipe.close()
            raise

    def run(self, start: int, target: int) -> int:
        """Move bytes until the file holds ``[start, target)``, the socket ends or stop()."""
        self.end = start
        poller = select.poll()
        poller.register(self._sock.fileno(), select.POLLIN)
        poller.register(self._wake_read, select.POLLIN)
        last_report = start
        try:
            while self.end < target and self._wait_for_go():
                try:
                    moved = self._pipe.fill_from(self._sock.fileno(), target - self.end)
                except BlockingIOError:
                    self._wait_for_load(poller, target)
                    continue
                if moved == 0:
                    self.end_of_stream = True
                    break
                self._part.write_from_pipe(self._pipe.read_end, self.end, moved)
                if self._sync_each:
                    self._part.sync()
                self.end += moved
                if self.end - last_report >= REPORT_EVERY:
                    self._report(self.end)
                    last_report = self.end
                if moved < self._pipe.capacity and self.end < target:
                    # Caught up with the sender: the next splice would take only what came
                    # meanwhile (a segment or two), so sleep until a pipe-load is queued.
                    # 1 GiB took 22,600 splices without this and 2,300 with it, and 0.05
                    # CPU-s less (of 1.1 with the hash).
                    self._wait_for_load(poller, target)
        finally:
            # Whoever reads the socket next (the event loop) wants every byte at once.
            with contextlib.suppress(OSError):
                self._set_low_water(1)
        return self.end

    def _wait_for_load(self, poller: select.poll, target: int) -> None:
        """Sleep until a pipe-load (or the run's rest) is queued in the socket, it ends, or
        stop(). A slower sender's bytes are taken as they are after :data:`_LOAD_WAIT_MS`;
        with none at all the thread waits for the first one, and raises TimeoutError after
        the idle timeout (counted from then, so a stalled body is closed on time)."""
        self._set_low_water(min(self._pipe.capacity, target - self.end))
        if poller.poll(_LOAD_WAIT_MS) or self._queued():
            return
        self._set_low_water(1)
        if not poller.poll(self._idle_ms):
            raise TimeoutError("no data for too long")

    def _queued(self) -> int:
        """Bytes waiting in the socket (a slow trickle stays below the low-water mark)."""
        answer = fcntl.ioctl(self._sock.fileno(), termios.FIONREAD, bytes(4))
        return int.from_bytes(answer, sys.byteorder)

    def _set_low_water(self, size: int) -> None:
        if size != self._low_water:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, size)
            self._low_water = size

    def _wait_for_go(self) -> bool:
        self._go.wait()
        return not self._stopped

    def pause(self) -> None:
        self._go.clear()

    def resume(self) -> None:
        self._go.set()

    def stop(self) -> None:
        """Make the thread return soon (from any thread)."""
        self._stopped = True
        self._go.set()
        with contextlib.suppress(OSError):
            os.write(self._wake_write, b"x")

    def close(self) -> None:
        """Release the descriptors; only once the thread has returned."""
        self._pipe.close()
        self._sock.close()
        for fd in (self._wake_read, self._wake_write):
            with contextlib.suppress(OSError):
                os.close(fd)
