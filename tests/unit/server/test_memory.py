"""The server caps glibc's heap arenas before its threads start."""

from __future__ import annotations

import subprocess
import sys


def test_the_arena_cap_is_taken_by_glibc() -> None:
    # In a child: the cap is process-wide and must not leak into the test process.
    code = "from freight.server.memory import limit_heap_arenas; print(limit_heap_arenas())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "True"


def test_the_mmap_threshold_is_pinned_with_the_arena_cap() -> None:
    code = "from freight.server.memory import tune_heap; print(tune_heap())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "True"
