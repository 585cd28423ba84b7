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


# In a child: the heap leaves 40 MiB of freed blocks below a live one (so free() alone
# cannot shrink it), then runs the quiet trimmer for a while over an activity counter that
# either stands still or keeps moving; it prints how many MiB of RSS that gave back.
TRIM_CHILD = """
import asyncio, contextlib, itertools, sys
from freight.server.memory import trim_when_quiet

def rss_mib():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 / 2**20

blocks = [bytes(2000) for _ in range(20_000)]
last = blocks[-1]
del blocks
counter = itertools.count()
activity = (lambda: 7) if sys.argv[1] == "still" else (lambda: next(counter))

async def main():
    before = rss_mib()
    task = asyncio.ensure_future(trim_when_quiet(activity, quiet=0.05))
    await asyncio.sleep(0.5)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    print(before - rss_mib())

asyncio.run(main())
"""


def freed_mib(activity: str) -> float:
    done = subprocess.run(
        [sys.executable, "-c", TRIM_CHILD, activity], capture_output=True, text=True, check=True
    )
    return float(done.stdout)


def test_a_quiet_node_hands_freed_heap_back() -> None:
    assert freed_mib("still") > 20


def test_a_busy_node_is_not_trimmed_under_its_feet() -> None:
    assert freed_mib("moving") < 5


def test_lightened_imports_leave_the_system_type_tables_unread() -> None:
    code = (
        "from freight.server.memory import lighten_imports; print(lighten_imports())\n"
        "import aiohttp.web, mimetypes, sys\n"
        "print(mimetypes.inited, 'frozenlist._frozenlist' in sys.modules)\n"
        "print(len(mimetypes.types_map) == len(mimetypes._types_map_default))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["True", "True", "False", "True"]
