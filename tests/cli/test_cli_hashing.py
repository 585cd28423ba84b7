"""The split SHA-256: prefix from disk in a thread, the rest from the transfer, any order."""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from freight.client.errors import LocalFileChanged
from freight.client.hashing import SplitHasher

CHUNK = 997  # small and odd, so reads and feeds never line up by accident


async def _hash_with_schedule(
    path: Path, data: bytes, prefix: int, moves: list[tuple[int, int]]
) -> bytes:
    """Feed like a sender that starts at ``prefix`` and sometimes jumps (rewinds or skips)."""
    hasher = SplitHasher(path, prefix, chunk_size=CHUNK)
    hasher.start()
    position = prefix
    try:
        for jump, size in moves:
            position = max(0, min(len(data), position + jump))
            piece = data[position : position + size]
            hasher.feed(position, piece)
            position += len(piece)
            await asyncio.sleep(0)
        return await hasher.finish(len(data))
    finally:
        await hasher.close()


@settings(max_examples=60, deadline=None)
@given(
    data=st.binary(min_size=0, max_size=20_000),
    prefix_fraction=st.floats(0, 1),
    moves=st.lists(
        st.tuples(st.sampled_from([0, 0, 0, -3000, -1, 1, 500]), st.integers(1, 4000)),
        max_size=30,
    ),
)
def test_digest_is_the_whole_file_whatever_the_feed_order(
    data: bytes, prefix_fraction: float, moves: list[tuple[int, int]]
) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "f"
        path.write_bytes(data)
        prefix = int(len(data) * prefix_fraction)
        digest = asyncio.run(_hash_with_schedule(path, data, prefix, moves))
    assert digest == hashlib.sha256(data).digest()


async def test_prefix_is_hashed_while_the_rest_is_fed(tmp_path: Path) -> None:
    data = os.urandom(8 * 1024 * 1024)
    path = tmp_path / "f"
    path.write_bytes(data)
    hasher = SplitHasher(path, 6 * 1024 * 1024, chunk_size=64 * 1024)
    hasher.start()
    for offset in range(6 * 1024 * 1024, len(data), 100_000):
        hasher.feed(offset, data[offset : offset + 100_000])
    assert await hasher.finish(len(data)) == hashlib.sha256(data).digest()
    await hasher.close()


async def test_a_file_shorter_than_announced_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 100)
    hasher = SplitHasher(path, 100, chunk_size=CHUNK)
    hasher.start()
    with pytest.raises(LocalFileChanged):
        await hasher.finish(150)
    await hasher.close()
