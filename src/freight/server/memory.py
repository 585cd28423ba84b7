"""How the server process uses the C heap.

glibc gives each thread that allocates its own heap arena (up to eight per core), and an
arena's touched pages stay resident. The server's threads (writes, hashing, splice, the
object store's loop) allocate little, but each one that does pins an arena: with two
arenas a fleet node uploading 512 MiB peaked at 72 MiB instead of 78, and with one arena
0.4 to 0.6 MiB below two (1 GiB uploads; measured). Threads then share the one arena; none
of them allocates on a hot path, and Python code allocates holding the GIL anyway, so the
arena's lock is all but never contended: the same server CPU per GiB (measured).

glibc also serves a block larger than its mmap threshold (128 KiB at first) with a mapping
of its own, returned to the system when freed; but each such free raises the threshold to
that block's size (up to 32 MiB), so from then on blocks of that size come from the heap
and their pages stay resident after they are freed. A node's bodies, part reads and buffers
are such blocks: with the threshold kept at 128 KiB a fleet node uploading 256 MiB peaked
2 MiB lower (measured). A mapping per large block costs two system calls, nothing beside
the megabytes such a block moves.

Freed heap memory below the heap's top stays resident until ``malloc_trim`` hands its
pages back. Start-up (imports, the first client objects) and each upload leave such holes:
the heap is trimmed once the node is quiet (no upload byte written for a second) after it
was busy, and once after start-up: 0.4 MiB at rest and 0.8 after an upload (measured on a
fleet node), and the next upload's peak starts that much lower. A trim takes well under a
millisecond, at most once per busy spell.

frozenlist (aiohttp's signal lists) ships its speed-up as a C++ extension, which loads the
C++ runtime: 1.2 MiB of a server's memory (measured), for lists that are only iterated,
once per request. The server asks for its plain Python version (frozenlist's documented
``FROZENLIST_NO_EXTENSIONS``) before aiohttp is first imported.

aiohttp builds a table of content types when imported, from the system's ``mime.types``
files (2,000 types): 0.4 MiB (measured) for a server that never guesses a type from a
file name (uploads carry theirs, the page's files are typed by freight). With no
``mimetypes.knownfiles`` it takes Python's own table of the common types.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import functools
import logging
import mimetypes
import os
import sys
from collections.abc import Callable

__all__ = [
    "ARENAS",
    "MMAP_THRESHOLD",
    "QUIET_SECONDS",
    "lighten_imports",
    "limit_heap_arenas",
    "trim_heap",
    "trim_when_quiet",
    "tune_heap",
]

log = logging.getLogger(__name__)

# mallopt's parameter numbers in glibc's malloc.h
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
ARENAS = 1
MMAP_THRESHOLD = 128 * 1024
QUIET_SECONDS = 1.0


def lighten_imports() -> bool:
    """Before aiohttp is imported: ask for the pure Python versions of extensions that
    cost more memory than they save time (unless the environment says otherwise), and
    leave the system's type tables unread (see the module's doc). False if it comes too
    late (aiohttp is imported already)."""
    os.environ.setdefault("FROZENLIST_NO_EXTENSIONS", "1")
    if not mimetypes.inited:
        mimetypes.knownfiles = []
    return "frozenlist" not in sys.modules and "aiohttp" not in sys.modules


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


def _mallopt() -> Callable[[int, int], int] | None:
    try:
        mallopt = _libc().mallopt  # type: ignore[union-attr]
    except AttributeError:
        return None
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt


def limit_heap_arenas(arenas: int = ARENAS) -> bool:
    """Cap glibc's arenas at ``arenas`` (before threads start); False where there is no
    glibc (another C library manages memory its own way)."""
    mallopt = _mallopt()
    return mallopt is not None and bool(mallopt(_M_ARENA_MAX, arenas))


def tune_heap(arenas: int = ARENAS, mmap_threshold: int = MMAP_THRESHOLD) -> bool:
    """Cap the arenas and pin the mmap threshold (see the module's doc); False where
    there is no glibc."""
    mallopt = _mallopt()
    if mallopt is None:
        return False
    return bool(mallopt(_M_ARENA_MAX, arenas)) and bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold))


def trim_heap() -> bool:
    """Hand the heap's free pages back to the system; False where there is no glibc."""
    try:
        malloc_trim = _libc().malloc_trim  # type: ignore[union-attr]
    except AttributeError:
        return False
    malloc_trim.argtypes = [ctypes.c_size_t]
    malloc_trim.restype = ctypes.c_int
    malloc_trim(0)
    return True


async def trim_when_quiet(activity: Callable[[], int], quiet: float = QUIET_SECONDS) -> None:
    """Trim the heap after start-up, then whenever ``activity`` (a counter of work done)
    has stood still for ``quiet`` seconds after it moved. Runs until cancelled."""
    trimmed_at: int | None = None
    seen = activity()
    while True:
        await asyncio.sleep(quiet)
        now = activity()
        if now == seen and now != trimmed_at:
            if not trim_heap():
                return
            trimmed_at = now
        seen = now
