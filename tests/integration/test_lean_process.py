"""A running server keeps the process-level memory settings of ``freight.server.memory``:
no extension that costs more memory than it saves time (the C++ build of frozenlist maps
the C++ runtime, 1.2 MiB of RSS, for lists aiohttp only walks), and one C heap arena for
all its threads (each further arena keeps its own touched pages)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from tests.conftest import ServerProcess
from tests.integration.helpers import PatternStream, create_upload, patch_stream

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/maps").exists(), reason="the mappings are read from /proc"
)
MiB = 1024 * 1024
# glibc reserves each arena beyond the main heap as a 64 MiB aligned mapping: its used
# part read-write, the rest without access.
ARENA_RESERVE = 64 * MiB


def mappings(pid: int) -> list[tuple[int, int, str, str]]:
    found = []
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        fields = line.split()
        start, end = (int(x, 16) for x in fields[0].split("-"))
        found.append((start, end, fields[1], fields[5] if len(fields) > 5 else ""))
    return found


def extra_arenas(pid: int) -> int:
    maps = mappings(pid)
    count = 0
    for (start, end, perms, path), following in itertools.pairwise(maps):
        if start % ARENA_RESERVE or perms != "rw-p" or path:
            continue
        rest_start, rest_end, rest_perms, _ = following
        if (rest_start, rest_end, rest_perms) == (end, start + ARENA_RESERVE, "---p"):
            count += 1
    return count


def test_the_server_maps_no_cpp_runtime(freight_server: ServerProcess) -> None:
    names = {Path(path).name for *_, path in mappings(freight_server.pid) if path}
    assert any("python" in name for name in names), names
    assert not [name for name in names if name.startswith(("libstdc++", "_frozenlist"))]


def test_the_server_threads_share_one_heap_arena(freight_server: ServerProcess) -> None:
    size = 32 * MiB
    for seed in range(3):  # the writer's, the database's and the hasher's threads all work
        url = create_upload(freight_server.url, size, {"filename": f"arena-{seed}.bin"})
        reply = patch_stream(url, 0, PatternStream(size, seed=seed).chunks(), size, timeout=60)
        assert reply.status == 204
    assert extra_arenas(freight_server.pid) == 0
