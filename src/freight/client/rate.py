"""One bandwidth limit for everything a command moves (``--limit-rate``): a token bucket.

Every protocol's sending loop, and every download's receiving loop, calls :func:`pace`
with the bytes it is about to move; inside :func:`limiting` that waits as long as the
limit requires, outside it returns at once. The bucket is shared by all the transfers of
the block (several files, several streams), so the limit is for the command as a whole.

The bucket lets at most ``burst`` seconds' worth of bytes through at once after a pause,
so an idle moment is not followed by a long burst above the rate; a piece larger than
the bucket is let through, and the next waits for it to be paid off.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Iterator
from contextvars import ContextVar

from freight.client.errors import ClientError

__all__ = ["RateLimit", "limiting", "pace", "parse_rate"]

_RATE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)(?:/s)?", re.IGNORECASE)
_FACTORS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


class RateLimit:
    """A token bucket of ``rate`` bytes per second."""

    def __init__(self, rate: float, *, burst: float = 0.1) -> None:
        if rate <= 0:
            raise ValueError("a rate limit must be positive")
        self.rate = rate
        self._burst = burst  # seconds of credit an idle bucket keeps
        self._free_at = time.monotonic()  # when the bytes taken so far are paid off

    async def take(self, count: int) -> None:
        """Wait until ``count`` more bytes may move."""
        now = time.monotonic()
        self._free_at = max(self._free_at, now - self._burst) + count / self.rate
        delay = self._free_at - now - self._burst
        if delay > 0:
            await asyncio.sleep(delay)


_LIMIT: ContextVar[RateLimit | None] = ContextVar("freight_rate_limit", default=None)


@contextlib.contextmanager
def limiting(limit: RateLimit | None) -> Iterator[None]:
    """Pace every transfer started in this block (this task and the tasks it starts)."""
    reset = _LIMIT.set(limit)
    try:
        yield
    finally:
        _LIMIT.reset(reset)


async def pace(count: int) -> None:
    """Wait until ``count`` bytes may move under the limit in force; none: no wait."""
    limit = _LIMIT.get()
    if limit is not None and count > 0:
        await limit.take(count)


def parse_rate(text: str) -> float:
    """Bytes per second from ``10M``, ``512k``, ``1.5MiB``, ``2G/s`` or ``1000000``;
    K, M, G and T are binary (1024-based), as with curl's ``--limit-rate``."""
    match = _RATE.fullmatch(text.strip())
    if match is None:
        raise ClientError(f"not a rate: {text!r} (try 10M, 512K or 1.5MiB)")
    value = float(match.group(1)) * _FACTORS[match.group(2).lower()]
    if value < 1:
        raise ClientError(f"a rate limit must be at least 1 byte per second, not {text!r}")
    return value
