"""HTTP plumbing shared by every client operation: sessions, server errors, retries.

Retry policy: connection failures, timeouts, cut-short bodies and the statuses that mean
"try again later" (408, 423, 429, 502, 503, 504) are retried with exponential backoff and
jitter. The budget counts *consecutive* failures: an attempt that moved the transfer forward
resets it, so a long transfer over a flaky link is not abandoned after ten hiccups spread
over hours, while a dead server is given up on after ``attempts`` tries. A server that
never answered at all (nothing reached yet) is given up on sooner, after
``unreached_deadline`` seconds: a typo in a URL should not cost two minutes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import ssl
import time
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import aiohttp

from freight import __version__
from freight.client.errors import ClientError, ConnectionFailed, ServerError
from freight.same_host import socket_for

__all__ = [
    "CHUNK_SIZE",
    "RETRYABLE_ERRORS",
    "RETRYABLE_STATUSES",
    "TUS_VERSION",
    "RetryBudget",
    "RetryCallback",
    "RetryNotice",
    "RetryPolicy",
    "Timeouts",
    "Verify",
    "describe_error",
    "is_retryable",
    "open_session",
    "parse_error_body",
    "retrying",
    "server_error",
    "tls_verify",
    "verifying",
]

TUS_VERSION = "1.0.0"
CHUNK_SIZE = 1024 * 1024  # read and write granularity; also the unit of progress reports
RETRYABLE_STATUSES = frozenset({408, 423, 429, 502, 503, 504})
RETRYABLE_ERRORS: tuple[type[BaseException], ...] = (
    aiohttp.ClientConnectionError,
    aiohttp.ClientPayloadError,
    asyncio.TimeoutError,
)
_MAX_ERROR_BODY = 64 * 1024
T = TypeVar("T")

Verify = ssl.SSLContext | bool
"""How https servers are checked: True against the system's CAs, an :class:`ssl.SSLContext`
against its own (see :func:`tls_verify`), False not at all."""

_VERIFY: ContextVar[Verify] = ContextVar("freight_client_verify", default=True)
_TOKEN = re.compile(r"^[\x21-\x7e]+$")  # visible ASCII: anything else breaks the header


@dataclass(frozen=True)
class Timeouts:
    """Socket-level timeouts in seconds; a transfer as a whole is never timed out.

    ``read`` bounds the silence between two reads while the server works (finishing an
    upload, answering a control message). ``stall`` bounds how long a transfer may go
    without progress while bytes are owed (sending blocked, a body, ACK or credit awaited):
    a link that stops forwarding without closing is abandoned and resumed after that long.
    """

    connect: float = 15.0
    read: float = 120.0
    stall: float = 30.0

    def for_transfer(self) -> Timeouts:
        """These timeouts for a session whose every read is owed data (a download)."""
        return Timeouts(self.connect, min(self.read, self.stall), self.stall)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry; ``attempts`` counts retries, 0 disables them."""

    attempts: int = 10
    initial_delay: float = 0.5
    max_delay: float = 30.0
    multiplier: float = 2.0
    unreached_deadline: float = 10.0  # seconds of retrying before any answer came

    def delay(self, failure: int) -> float:
        """Seconds to wait before retry number ``failure`` (1-based), with jitter."""
        base = min(self.max_delay, self.initial_delay * self.multiplier ** (failure - 1))
        # Jitter keeps many clients cut off by the same server restart from returning at once.
        return base * random.uniform(0.75, 1.0)


@dataclass(frozen=True)
class RetryNotice:
    """Reported before each retry so a UI can say what is happening."""

    attempt: int
    attempts: int
    delay: float
    reason: str


RetryCallback = Callable[[RetryNotice], None]


class RetryBudget:
    """Counts consecutive failures of one operation and sleeps between retries.

    What counts as progress is the far end's *durable* position moving forward
    (:meth:`reached`): an ACK, a credit, the offset a resume starts from, bytes written to a
    download's ``.part``. Each protocol reports every such position it learns, wherever it
    learns it, so a link cut every few MiB never exhausts the budget while each attempt
    moves the transfer on.
    """

    def __init__(
        self,
        policy: RetryPolicy,
        on_retry: RetryCallback | None = None,
        *,
        answered: bool = False,
    ) -> None:
        self._policy = policy
        self._on_retry = on_retry
        self._failures = 0
        self._furthest = -1
        self._answered = answered
        self._started = time.monotonic()

    def progressed(self) -> None:
        """The operation moved forward: the next failure starts a fresh count."""
        self._failures = 0
        self._answered = True

    def answered(self) -> None:
        """The server answered: it exists, so it gets the whole budget from now on."""
        self._answered = True

    def reached(self, position: int) -> None:
        """The durable position is ``position``: progress if it is the furthest seen yet."""
        self._answered = True
        if position > self._furthest:
            if self._furthest >= 0:
                self._failures = 0
            self._furthest = position

    async def failed(self, reason: str, cause: BaseException | None = None) -> None:
        """Wait before the next attempt, or raise :class:`ConnectionFailed` if none is left.
        A ``cause`` that is the server's answer (an error status) shows the server is there."""
        if isinstance(cause, ServerError):
            self._answered = True
        self._failures += 1
        if self._failures > self._policy.attempts:
            tries = self._failures
            raise ConnectionFailed(f"{reason} (gave up after {tries} attempts)")
        delay = self._policy.delay(self._failures)
        waited = time.monotonic() - self._started
        if not self._answered and waited + delay > self._policy.unreached_deadline:
            raise ConnectionFailed(f"{reason} (no answer for {waited:.0f} s; gave up)")
        if self._on_retry is not None:
            self._on_retry(RetryNotice(self._failures, self._policy.attempts, delay, reason))
        await asyncio.sleep(delay)


async def retrying(
    budget: RetryBudget,
    operation: Callable[[], Awaitable[T]],
    *,
    retryable: Callable[[BaseException], bool] | None = None,
) -> T:
    """Run ``operation`` until it succeeds, retrying transient failures within ``budget``;
    ``retryable`` says which failures are transient (by default :func:`is_retryable`)."""
    transient = retryable or is_retryable
    while True:
        try:
            return await operation()
        except Exception as exc:
            if not transient(exc):
                raise
            await budget.failed(describe_error(exc), exc)


def is_retryable(exc: BaseException) -> bool:
    """True for transient transport failures; TLS certificate problems never heal by waiting."""
    if isinstance(exc, aiohttp.ClientSSLError):
        return False
    if isinstance(exc, ServerError):
        return exc.http_status in RETRYABLE_STATUSES
    return isinstance(exc, RETRYABLE_ERRORS)


def describe_error(exc: BaseException) -> str:
    """One line saying what went wrong with a request, without aiohttp's internals."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        reason = getattr(exc.certificate_error, "verify_message", "") or exc.certificate_error
        return (
            f"the TLS certificate of {exc.host}:{exc.port} is not trusted ({reason}); "
            "give its CA with --cacert FILE, or skip the check with --insecure"
        )
    if isinstance(exc, aiohttp.ClientSSLError):
        return f"TLS with {exc.host}:{exc.port} failed: {_ssl_reason(exc.os_error)}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect to {exc.host}:{exc.port}: {_os_reason(exc.os_error)}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection"
    if isinstance(exc, asyncio.TimeoutError):
        return "the server stopped answering (timed out)"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "the response body was cut short"
    if isinstance(exc, ClientError):
        return exc.message
    if isinstance(exc, aiohttp.ClientOSError):
        return f"connection lost: {_os_reason(exc)}"
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())


def _ssl_reason(exc: OSError) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return exc.reason.lower().replace("_", " ")
    return str(exc) or type(exc).__name__


def _os_reason(exc: OSError) -> str:
    # asyncio's "Connect call failed (...)" hides the errno's meaning; say it plainly.
    if exc.errno is not None:
        return os.strerror(exc.errno)
    return str(exc) or type(exc).__name__


def tls_verify(cafile: str | Path | None = None, *, insecure: bool = False) -> Verify:
    """What :func:`verifying` takes: trust only the CAs in ``cafile`` (PEM), as ``curl
    --cacert`` does; the system's CAs without one; nothing at all with ``insecure``."""
    if insecure:
        return False
    if cafile is None:
        return True
    try:
        return ssl.create_default_context(cafile=str(cafile))
    except (OSError, ssl.SSLError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ClientError(f"cannot use {cafile} as CA certificates: {reason}") from None


@contextlib.contextmanager
def verifying(verify: Verify) -> Iterator[None]:
    """Check https servers with ``verify`` in every session opened inside this block (by
    this task and the tasks it starts), unless a session is given its own."""
    reset = _VERIFY.set(verify)
    try:
        yield
    finally:
        _VERIFY.reset(reset)


def open_session(
    token: str | None = None, *, timeouts: Timeouts | None = None, verify: Verify | None = None
) -> aiohttp.ClientSession:
    """A client session sending ``Authorization: Bearer <token>`` when a token is given,
    checking https servers with ``verify`` (by default, what :func:`verifying` set)."""
    timeouts = timeouts or Timeouts()
    headers = {
        "User-Agent": f"freight/{__version__}",
        # Byte offsets must mean the same thing on both ends: no transfer compression.
        "Accept-Encoding": "identity",
    }
    if token is not None:
        if not _TOKEN.match(token):
            raise ClientError("the token must be visible ASCII without spaces")
        headers["Authorization"] = f"Bearer {token}"
    timeout = aiohttp.ClientTimeout(
        total=None, sock_connect=timeouts.connect, sock_read=timeouts.read
    )
    connector = aiohttp.TCPConnector(
        ssl=_VERIFY.get() if verify is None else verify, socket_factory=socket_for
    )
    return aiohttp.ClientSession(
        connector=connector,
        headers=headers,
        timeout=timeout,
        auto_decompress=False,
        read_bufsize=256 * 1024,
    )


async def server_error(resp: aiohttp.ClientResponse, action: str) -> ServerError:
    """Build the error for an unexpected status, using the server's JSON message if any."""
    message = ""
    code: str | None = None
    if resp.method != "HEAD":
        try:
            body = await resp.content.read(_MAX_ERROR_BODY)
        except RETRYABLE_ERRORS:
            body = b""
        message, code = _parse_error_body(body)
    if not message:
        message = resp.reason or "error"
    message = " ".join(message.split())
    return ServerError(
        f"{action}: {message} (HTTP {resp.status})", http_status=resp.status, server_code=code
    )


def _parse_error_body(body: bytes) -> tuple[str, str | None]:
    try:
        data = json.loads(body)
    except ValueError:
        text = body.decode("utf-8", "replace").strip()
        return (text if len(text) <= 200 and "<" not in text else ""), None
    if not isinstance(data, dict):
        return "", None
    message = data.get("message")
    code = data.get("code")
    return (str(message) if message else ""), (str(code) if code else None)


def parse_error_body(body: bytes) -> tuple[str, str | None]:
    """The message and code of an error body (freight's JSON, or short plain text)."""
    return _parse_error_body(body)
