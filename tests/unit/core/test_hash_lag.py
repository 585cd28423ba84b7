"""The bound on how far the running hash may trail the bytes written (core/hash_lag.py)."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from pathlib import Path
from typing import cast

import pytest

from freight.core.buffers import ReadBuffers
from freight.core.hash_follower import HASH_NICENESS, HashFollower
from freight.core.hash_lag import MAX_LAG, MEMORY_SHARE, REFRESH, HashLag, available_memory
from freight.core.ports import SessionRepository
from freight.storage.memory import MemoryBlobs

MiB = 1024 * 1024


def test_the_bound_grows_with_the_memory_to_spare() -> None:
    memory = [int(256 * MiB / MEMORY_SHARE)]
    lag = HashLag(128 * MiB, lambda: 1, available=lambda: memory[0], clock=lambda: 0.0)
    assert lag.bound() == 256 * MiB


def test_never_below_the_floor_nor_above_the_cap() -> None:
    assert HashLag(128 * MiB, lambda: 1, available=lambda: 64 * MiB).bound() == 128 * MiB
    assert HashLag(128 * MiB, lambda: 1, available=lambda: None).bound() == 128 * MiB
    plenty = int(64 * MAX_LAG / MEMORY_SHARE)
    assert HashLag(128 * MiB, lambda: 1, available=lambda: plenty).bound() == MAX_LAG


def test_uploads_being_written_share_it() -> None:
    memory = int(1024 * MiB / MEMORY_SHARE)
    assert HashLag(MiB, lambda: 4, available=lambda: memory).bound() == 256 * MiB


def test_looked_up_again_only_after_a_while() -> None:
    now, calls = [0.0], [0]

    def available() -> int:
        calls[0] += 1
        return int(calls[0] * 100 * MiB / MEMORY_SHARE)

    lag = HashLag(MiB, lambda: 1, available=available, clock=lambda: now[0])
    assert lag.bound() == 100 * MiB
    now[0] += REFRESH / 2
    assert lag.bound() == 100 * MiB
    now[0] += REFRESH
    assert lag.bound() == 200 * MiB
    assert calls[0] == 2


def test_available_memory_reads_meminfo(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:  2048 kB\nMemAvailable:    1024 kB\n")
    assert available_memory(meminfo) == 1024 * 1024
    meminfo.write_text("MemTotal:  2048 kB\n")
    assert available_memory(meminfo) is None
    assert available_memory(tmp_path / "absent") is None


@pytest.mark.skipif(sys.platform != "linux", reason="per-thread niceness is Linux's")
async def test_hashing_threads_run_at_a_lower_priority() -> None:
    """The hash gives way to receiving; the shared thread pool keeps its priority."""

    def priority() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    before = await asyncio.to_thread(priority)
    sessions = cast(SessionRepository, None)  # not used to run a thread
    follower = HashFollower(
        sessions, MemoryBlobs(), ReadBuffers(), asyncio.ensure_future, enabled=True
    )
    seen: list[int] = []
    try:
        await follower._in_thread(lambda: seen.append(priority()))
    finally:
        follower.close()
    assert seen == [min(19, before + HASH_NICENESS)]
    assert await asyncio.to_thread(priority) == before
