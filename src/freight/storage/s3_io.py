"""Small I/O pieces of the S3 blob store: a file window as a request body, a reader of
finished objects, and the store's own event loop."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import threading
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

import aiohttp
from botocore.exceptions import ConnectionError as BotocoreConnectionError
from botocore.exceptions import HTTPClientError as BotocoreHTTPError

from freight.errors import FreightError, StorageUnavailable, UploadNotFound

__all__ = ["S3Reader", "StoreLoop", "WindowReader", "client_error_code", "s3_failure"]

T = TypeVar("T")

# What a part's body hands the HTTP client per read: just under glibc's mmap threshold
# (server.memory), so the block is reused from the heap instead of mapped and unmapped
# each time. With 256 KiB reads a node peaked 0.7 MiB higher, and spent more CPU.
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
    executor, and they wait for uploads. aiohttp reads a request body from a file in the
    default executor of *its* loop: on the engine's loop a few waiting writers would take
    every thread those reads need, and nothing would move again. On this loop the reads
    get an executor no writer ever waits in. Coroutines are handed over with
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


class WindowReader(io.RawIOBase):
    """``size`` bytes of a file descriptor from ``start``, as a seekable request body.

    Reads go through ``os.preadv`` into the caller's buffer, so a part streams from the spool
    file in the HTTP client's small chunks (in its executor) and never sits in memory whole.
    The SHA-256 of the window is taken as it streams (no second pass over the bytes); a
    retry seeks back to 0 and starts it again. The descriptor stays the caller's.
    """

    def __init__(self, fd: int, start: int, size: int) -> None:
        super().__init__()
        self._fd = fd
        self._start = start
        self._size = size
        self._pos = 0
        self._hash = hashlib.sha256()
        self._hashed = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        if self._pos == 0:
            self._hash, self._hashed = hashlib.sha256(), 0
        return self._pos

    def read(self, size: int | None = -1) -> bytes:
        """Up to ``size`` bytes, at most :data:`READ_PIECE` (all that is left without a
        size), in one new object: how the HTTP client reads a body. ``RawIOBase.read``
        would fill a buffer of that size and copy it, two blocks per part in flight."""
        left = self._size - self._pos
        want = left if size is None or size < 0 else min(size, left, READ_PIECE)
        if want <= 0:
            return b""
        data = os.pread(self._fd, want, self._start + self._pos)
        if not data:
            data = bytes(want)  # a hole, as in readinto
        self._account(data)
        return data

    def _account(self, data: Any) -> None:
        if self._pos == self._hashed:
            self._hash.update(data)
            self._hashed += len(data)
        self._pos += len(data)

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        want = min(len(view), self._size - self._pos)
        if want <= 0:
            return 0
        got = os.preadv(self._fd, [view[:want]], self._start + self._pos)
        if got == 0:
            # The spool holds a hole there (never written): the part is sent with zeros,
            # which the table never counts as received bytes.
            view[:want] = bytes(want)
            got = want
        self._account(view[:got])
        return got

    def sha256(self) -> bytes:
        """The SHA-256 of the window (read again if the client skipped around in it)."""
        if self._hashed == self._size:
            return self._hash.digest()
        digest = hashlib.sha256()
        self.seek(0)
        buffer = bytearray(1 << 20)
        while got := self.readinto(buffer):
            digest.update(memoryview(buffer)[:got])
        return digest.digest()

    def __len__(self) -> int:
        return self._size - self._pos


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
        end = offset + len(target) - 1
        response = await self._client.get_object(
            Bucket=self._bucket, Key=self._key, Range=f"bytes={offset}-{end}"
        )
        filled = 0
        async with response["Body"] as body:
            while filled < len(target):
                chunk = await body.read(min(len(target) - filled, 1 << 20))
                if not chunk:
                    break
                target[filled : filled + len(chunk)] = chunk
                filled += len(chunk)
        return filled

    def close(self) -> None:
        pass
