"""Small I/O pieces of the S3 blob store: a file window as a request body, a reader of
finished objects, and the store's own event loop."""

from __future__ import annotations

import asyncio
import os
import threading
import zlib
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

import aiohttp
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_writer import StreamWriter
from aiohttp.payload import Payload
from botocore.exceptions import ConnectionError as BotocoreConnectionError
from botocore.exceptions import HTTPClientError as BotocoreHTTPError

from freight.errors import FreightError, StorageUnavailable, UploadNotFound

__all__ = [
    "PartBody",
    "S3Reader",
    "StoreLoop",
    "client_error_code",
    "read_range",
    "s3_failure",
    "window_crc32",
]

T = TypeVar("T")

# A part's body read in Python (hashed, or sent over TLS) goes in pieces just under glibc's
# mmap threshold (server.memory), so the block is reused from the heap instead of mapped and
# unmapped each time. With 256 KiB reads a node peaked 0.7 MiB higher, and spent more CPU.
READ_PIECE = 128 * 1024 - 64


def client_error_code(exc: BaseException) -> str | None:
    """The S3 error code of a botocore ``ClientError`` (``None`` for anything else)."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None
    code = response.get("Error", {}).get("Code")
    return str(code) if code is not None else None


# Codes S3 and its look-alikes answer when they are overloaded or failing, not the caller.
_PASSING = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestThrottled",
        "RequestLimitExceeded",
        "TooManyRequests",
        "ServiceUnavailable",
        "InternalError",
        "RequestTimeout",
        "503",
        "500",
        "429",
    }
)


def s3_failure(exc: BaseException) -> FreightError:
    """A raw client error as a FreightError: missing objects become UploadNotFound; a
    store that cannot be reached, answers 5xx, throttles or times out StorageUnavailable
    (retry shortly); anything else (refused credentials, a missing bucket) stays a plain
    FreightError naming the store's code."""
    if isinstance(exc, FreightError):
        return exc
    code = client_error_code(exc)
    if code in ("NoSuchKey", "NoSuchUpload", "404"):
        return UploadNotFound("no such upload")
    reason = code or type(exc).__name__
    if _is_passing(exc, code):
        return StorageUnavailable(f"the object store is unavailable: {reason}")
    return FreightError(f"the object store failed: {reason}")


def _is_passing(exc: BaseException, code: str | None) -> bool:
    if code is not None:
        status = getattr(exc, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode")
        return code in _PASSING or (isinstance(status, int) and status >= 500)
    # No answer at all: botocore's connection and timeout errors, aiohttp's, the OS's.
    unreachable = (BotocoreConnectionError, BotocoreHTTPError, aiohttp.ClientError)
    return isinstance(exc, (OSError, TimeoutError, *unreachable))


class StoreLoop:
    """An event loop in a thread of its own, where the store's clients live.

    The engine calls writers and readers from worker threads of its loop's default
    executor, and they wait for uploads. Each part upload first checksums its file in the
    default executor of *its* loop: on the engine's loop a few waiting writers would take
    every thread that needs, and nothing would move again. On this loop it gets an
    executor no writer ever waits in. Coroutines are handed over with
    ``run_coroutine_threadsafe``: awaited from the engine's loop (:meth:`call`), or
    waited for by a worker thread (:meth:`run`); a blocking wait from a thread running an
    event loop is refused.
    """

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name="freight-s3", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    async def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Await ``coroutine`` on the store's loop (from any other loop)."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        return await asyncio.wrap_future(future)

    def run(self, make: Callable[..., Awaitable[T]], *args: Any) -> T:
        return self.wait(self.submit(make, *args))

    def submit(self, make: Callable[..., Awaitable[T]], *args: Any) -> Future[T]:
        """Start ``make(*args)`` on the store's loop; :meth:`wait` for its result."""
        if _in_event_loop():
            raise RuntimeError("S3 writers and readers must be called from worker threads")
        return asyncio.run_coroutine_threadsafe(_as_coroutine(make, *args), self.loop)

    def wait(self, future: Future[T]) -> T:
        try:
            return future.result(self._timeout)
        except TimeoutError as exc:
            future.cancel()
            raise StorageUnavailable("the object store did not answer in time") from exc
        except Exception as exc:
            raise s3_failure(exc) from exc

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


async def _as_coroutine(make: Callable[..., Awaitable[T]], *args: Any) -> T:
    return await make(*args)


class PartBody(Payload):
    """``size`` bytes of a file descriptor from ``start``, as a request body.

    The HTTP client writes it with ``sendfile`` over a plain TCP connection: the bytes go
    from the spool's page cache to the socket without passing through Python, and no
    thread is woken per chunk (aiohttp reads a file body in its executor, one hand-off per
    128 KiB: that cost more CPU than the copy). Over TLS it is read with ``os.pread`` on
    the loop, in pieces (the spool's pages were just written: they are in memory).
    ``read``/``seek`` serve botocore when it reads a body itself (payload signing). The
    descriptor stays the caller's.
    """

    def __init__(self, fd: int, start: int, size: int) -> None:
        super().__init__(fd, content_type="application/octet-stream")
        self._fd = fd
        self._start = start
        self._count = size
        self._size = size  # what aiohttp reads as the body's length
        self._pos = 0

    def __len__(self) -> int:
        return self._count - self._pos

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self._count}[whence]
        self._pos = max(0, min(self._count, base + offset))
        return self._pos

    def read(self, size: int | None = -1) -> bytes:
        left = self._count - self._pos
        want = left if size is None or size < 0 else min(size, left)
        data = _pread(self._fd, want, self._start + self._pos)
        self._pos += len(data)
        return data

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        raise TypeError("a part body is binary")

    async def write(self, writer: AbstractStreamWriter) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
        size = self._count if content_length is None else min(self._count, content_length)
        done = 0
        # sendfile only where the body goes out as it is: a chunked body needs framing.
        if isinstance(writer, StreamWriter) and not writer.chunked and size > 0:
            transport = writer.transport
            if transport is not None:
                writer.send_headers()
                await writer.drain()
                done = await _sendfile(transport, self._fd, self._start, size)
        # The rest (all of it without sendfile; past the end of a shorter file: zeros).
        while done < size:
            piece = _pread(self._fd, min(READ_PIECE, size - done), self._start + done)
            await writer.write(piece)
            done += len(piece)


async def _sendfile(transport: asyncio.Transport, fd: int, start: int, size: int) -> int:
    """Bytes of ``fd`` sent by sendfile (0 when it cannot be used: TLS, a loop without)."""
    file = open(fd, "rb", buffering=0, closefd=False)  # noqa: SIM115
    try:
        return await asyncio.get_running_loop().sendfile(
            transport, file, start, size, fallback=False
        )
    except asyncio.SendfileNotAvailableError:
        return 0  # raised before anything is sent
    finally:
        file.close()


def _pread(fd: int, size: int, at: int) -> bytes:
    if size <= 0:
        return b""
    data = os.pread(fd, size, at)
    # Short only where the spool holds a hole (never written): sent as zeros, which the
    # table never counts as received bytes.
    return data if len(data) == size else data + bytes(size - len(data))


def window_crc32(fd: int, start: int, size: int) -> bytes:
    """The CRC-32 (big-endian, as S3's ``x-amz-checksum-crc32``) of ``size`` bytes of
    ``fd`` from ``start`` (holes read as zeros), through one small reused buffer (in a
    worker thread: zlib lets go of the GIL)."""
    crc = 0
    buffer = bytearray(READ_PIECE)
    view = memoryview(buffer)
    done = 0
    while done < size:
        want = min(len(buffer), size - done)
        got = os.preadv(fd, [view[:want]], start + done)
        if got < want:
            view[got:want] = bytes(want - got)
        crc = zlib.crc32(view[:want], crc)
        done += want
    return crc.to_bytes(4, "big")


class S3Reader:
    """A finished object read with ranged GETs into the caller's buffer."""

    def __init__(self, bridge: StoreLoop, client: Any, bucket: str, key: str, size: int):
        self._bridge = bridge
        self._client = client
        self._bucket = bucket
        self._key = key
        self._size = size

    def read_into(self, offset: int, buffer: memoryview) -> int:
        want = min(len(buffer), self._size - offset)
        if want <= 0:
            return 0
        return self._bridge.run(self._read, offset, buffer[:want])

    async def _read(self, offset: int, target: memoryview) -> int:
        return await read_range(self._client, self._bucket, self._key, offset, target)

    def close(self) -> None:
        pass


async def read_range(client: Any, bucket: str, key: str, offset: int, target: memoryview) -> int:
    """Fill ``target`` with the object's bytes from ``offset`` (one ranged GET); returns how
    many came (fewer only where the object ends)."""
    end = offset + len(target) - 1
    response = await client.get_object(Bucket=bucket, Key=key, Range=f"bytes={offset}-{end}")
    filled = 0
    async with response["Body"] as body:
        while filled < len(target):
            chunk = await body.read(min(len(target) - filled, 1 << 20))
            if not chunk:
                break
            target[filled : filled + len(chunk)] = chunk
            filled += len(chunk)
    return filled
