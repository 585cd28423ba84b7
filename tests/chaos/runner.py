"""Running many uploads at once on a background event loop, and checking what got stored.

:class:`ClientRun` starts every :class:`~clients.Job` on one loop in a daemon thread (the
test's own thread stays free to kill servers and watch offsets) and records, per job, the
file's id or the error that ended it. :func:`make_jobs` writes the source files.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import random
import time
from collections.abc import Sequence
from pathlib import Path

import psutil
from clients import Endpoints, Job, stored_sha256, upload

from tests.cli.cli_support import LoopThread, make_file

__all__ = ["ClientRun", "corrupt_files", "make_jobs", "peak_rss"]


def make_jobs(
    directory: Path, protocols: Sequence[str], sizes: Sequence[int], prefix: str = "f"
) -> list[Job]:
    """One random file per size, the protocols taken in turn."""
    directory.mkdir(parents=True, exist_ok=True)
    jobs = []
    for index, size in enumerate(sizes):
        protocol = protocols[index % len(protocols)]
        name = f"{prefix}{index:03d}-{protocol}"
        path = directory / f"{name}.bin"
        jobs.append(Job(name, protocol, path, make_file(path, size), directory / f"{name}.state"))
    return jobs


def random_sizes(count: int, low: int, high: int, seed: int) -> list[int]:
    chooser = random.Random(seed)
    return [chooser.randint(low, high) for _ in range(count)]


class ClientRun:
    """All ``jobs`` uploading concurrently through ``endpoints``."""

    def __init__(
        self, jobs: list[Job], endpoints: Endpoints, *, attempts: int, read_timeout: float
    ) -> None:
        self.jobs = jobs
        self.endpoints = endpoints
        self.attempts = attempts
        self.read_timeout = read_timeout
        self.finished: dict[str, float] = {}  # job name -> monotonic time it ended
        self._loop = LoopThread()
        self._future: concurrent.futures.Future[None] | None = None
        self.started = 0.0

    def start(self) -> ClientRun:
        self.started = time.monotonic()
        self._future = asyncio.run_coroutine_threadsafe(self._all(), self._loop.loop)
        return self

    async def _all(self) -> None:
        await asyncio.gather(*(self._one(job) for job in self.jobs))

    async def _one(self, job: Job) -> None:
        began = time.monotonic()
        try:
            job.stored_id = await upload(
                job, self.endpoints, attempts=self.attempts, read_timeout=self.read_timeout
            )
        except Exception as exc:
            job.error = f"{type(exc).__name__}: {exc}"
        finally:
            job.seconds = time.monotonic() - began
            self.finished[job.name] = time.monotonic()

    def running(self) -> list[Job]:
        return [job for job in self.jobs if job.name not in self.finished]

    def wait(self, timeout: float) -> bool:
        """True once every job ended (well or not) within ``timeout`` seconds."""
        assert self._future is not None
        try:
            self._future.result(timeout)
        except concurrent.futures.TimeoutError:
            return False
        return True

    def close(self) -> None:
        if self._future is not None and not self._future.done():
            self._future.cancel()  # cancels the task on its loop
            with contextlib.suppress(concurrent.futures.CancelledError, TimeoutError):
                self._future.result(10)
        self._loop.close()


def corrupt_files(jobs: list[Job], direct: str) -> list[str]:
    """Names of finished jobs whose stored file's SHA-256 differs from the source's."""
    return [
        job.name
        for job in jobs
        if job.stored_id and stored_sha256(direct, job.stored_id) != job.sha256
    ]


def peak_rss(pid: int, previous: int = 0) -> int:
    """The larger of ``previous`` and the process's resident set size now (0 if it is gone)."""
    try:
        return max(previous, psutil.Process(pid).memory_info().rss)
    except psutil.Error:
        return previous
