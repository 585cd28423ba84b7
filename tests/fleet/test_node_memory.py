"""A fleet node's memory: its peak stays under 64 MiB and does not grow with the file.

A node receives a small tus upload, then one 16 times larger, from a real PostgreSQL and
into a real SeaweedFS. Its peak resident set (``VmHWM``) after each is read from
``/proc``: the first holds every cost a first upload brings (the part uploads' connections,
the object store client's operation models, the writer's buffers, worker threads), the
second every cost that would grow with the file. ``make bench`` measures the same through
4 GiB.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.conftest import ServerProcess
from tests.fleet.conftest import Fleet, MiB
from tests.integration.helpers import PatternStream, create_upload, patch_stream, repr_digest_hex

# The issue asks for a peak under 64 MiB ("per node, peak RSS under 64 MiB"); a node peaks
# near 60 (59.8 to 60.6 after 256 MiB, measured on a loaded 2-core machine), so 62 leaves
# room for load and still fails when the savings are lost (63.3 without them: the lean
# endpoint rules, frozenlist's C++ runtime, one heap arena, the quiet trim).
PEAK_LIMIT_MIB = 62.0
# What a larger file may add: threads the executors start once, a page or two of the
# allocator (0.6 to 1.4 MiB measured on a loaded 2-core machine, so 1.5 left no room).
# A buffer kept per part, or any cost per byte, is far more (a part is 5 MiB).
GROWTH_LIMIT_MIB = 2.0
SMALL = 16 * MiB
LARGE = 256 * MiB

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/status").exists(), reason="VmHWM is read from /proc"
)


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmHWM for process {pid}")


def upload(node: ServerProcess, size: int, seed: int) -> None:
    source = PatternStream(size, seed=seed)
    url = create_upload(node.url, size, {"filename": f"memory-{size}.bin"})
    hasher = hashlib.sha256()
    reply = patch_stream(url, 0, source.chunks(), size, hasher=hasher, timeout=120)
    assert reply.status == 204, "".join(node.output_tail)[-3000:]
    assert repr_digest_hex(reply.header("Repr-Digest")) == hasher.hexdigest()


def test_a_node_peaks_under_64_mib_and_flat_in_file_size(fleet: Fleet) -> None:
    node = fleet.start_node()
    upload(node, SMALL, seed=1)
    small = peak_rss_mib(node.pid)
    upload(node, LARGE, seed=2)
    large = peak_rss_mib(node.pid)
    figures = f"peak {small:.1f} MiB after {SMALL // MiB} MiB, {large:.1f} after {LARGE // MiB}"
    print(figures)
    assert large < PEAK_LIMIT_MIB, figures
    assert large - small < GROWTH_LIMIT_MIB, figures
