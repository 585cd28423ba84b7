"""What every transfer takes alike, whatever its protocol or direction.

Every uploader and downloader (:func:`~freight.client.upload.upload_file`,
:func:`~freight.client.ws.upload_file_ws`, :func:`~freight.client.chunks.upload_chunks`,
:func:`~freight.client.tcp_upload.upload_tcp`, the stdin upload and the three downloads)
takes one :class:`TransferOptions` for the token, the retry policy and its notices,
timeouts, progress, the resume store, the read size and the TLS check; only what belongs to
one protocol (``parallel``, ``overwrite``, ``metadata``...) stays an argument of its own. A
caller builds the options once and hands the same object to whichever protocol it uses;
:func:`dataclasses.replace` gives a variant (another file's progress callback, say).

The rate limit is not here: it is one token bucket shared by every stream of a command,
set around the whole command with :func:`freight.client.rate.limiting`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp

from freight.client.http import (
    CHUNK_SIZE,
    RetryBudget,
    RetryCallback,
    RetryPolicy,
    Timeouts,
    Verify,
    open_session,
)
from freight.client.resume_store import ResumeStore

__all__ = ["ProgressCallback", "TransferOptions"]

ProgressCallback = Callable[[int], None]
"""Called with the absolute number of bytes done; it moves back if a retry rewinds."""


@dataclass(frozen=True)
class TransferOptions:
    """How to transfer, for any protocol. The defaults are those of a bare call.

    ``resume_store`` remembers unfinished transfers so that running the same one again
    resumes it (None: nothing remembered). ``chunk_size`` is the size of local reads and
    writes. ``verify`` checks https servers (None: what
    :func:`~freight.client.http.verifying` set, by default the system's CAs).
    """

    token: str | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    on_retry: RetryCallback | None = None
    timeouts: Timeouts = field(default_factory=Timeouts)
    progress: ProgressCallback | None = None
    resume_store: ResumeStore | None = None
    chunk_size: int = CHUNK_SIZE
    verify: Verify | None = None

    def budget(self) -> RetryBudget:
        """A fresh retry budget: one per operation that retries on its own."""
        return RetryBudget(self.retry, self.on_retry)

    def session(self, *, download: bool = False) -> aiohttp.ClientSession:
        """An HTTP session with the token, timeouts and TLS check. A download's every read
        is owed bytes, so there silence for ``stall`` seconds is a stalled link."""
        timeouts = self.timeouts.for_transfer() if download else self.timeouts
        return open_session(self.token, timeouts=timeouts, verify=self.verify)


DEFAULTS = TransferOptions()
