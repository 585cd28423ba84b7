"""Parts that arrive ahead of the contiguous prefix, on fleet nodes: the node whose record
completes the prefix before them hashes them then, from the parts its spool still holds
(at most ``HOLD_PARTS`` per upload), so finishing reads back from the finished object only
what no node held for it (``freight_hash_read_back_bytes_total`` on /metrics counts it)."""

from __future__ import annotations

import hashlib
import os
import random
import re
from pathlib import Path

import aiohttp

from freight.client import ResumeStore
from freight.client.options import TransferOptions
from freight.client.protocols import UPLOADERS
from freight.storage.s3_spool import HOLD_PARTS
from tests.conftest import ServerProcess
from tests.fleet.conftest import PART_SIZE, Fleet

_METRIC = re.compile(r"^(freight_hash_\w+)_total (\S+)$", re.MULTILINE)


async def hash_counters(http: aiohttp.ClientSession, node: ServerProcess) -> dict[str, int]:
    async with http.get(node.url + "/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    return {name: int(float(value)) for name, value in _METRIC.findall(text)}


def spool_files(root: Path, number: int) -> int:
    spool = root / f"spool-{number}" / "freight-spool"
    return sum(1 for path in spool.rglob("*") if path.is_file()) if spool.exists() else 0


async def create(http: aiohttp.ClientSession, node: ServerProcess, size: int) -> str:
    async with http.post(node.url + "/api/uploads", json={"name": "a.bin", "size": size}) as resp:
        assert resp.status == 201, await resp.text()
        created = await resp.json()
    assert created["chunk_size"] == PART_SIZE
    return str(created["upload_url"])


async def put_chunk(
    http: aiohttp.ClientSession, node: ServerProcess, url: str, data: bytes, n: int
) -> None:
    body = data[n * PART_SIZE : (n + 1) * PART_SIZE]
    async with http.put(f"{node.url}{url}/chunks/{n}", data=body) as resp:
        assert resp.status == 200, await resp.text()


async def complete(http: aiohttp.ClientSession, node: ServerProcess, url: str) -> str:
    async with http.post(node.url + url + "/complete", json={}) as resp:
        assert resp.status == 200, await resp.text()
        return str((await resp.json())["sha256"])


async def test_shuffled_parts_through_one_node_are_hashed_from_its_spool(fleet: Fleet) -> None:
    node = fleet.start_node()
    parts = HOLD_PARTS - 2
    data = os.urandom(parts * PART_SIZE)
    order = list(range(1, parts))
    random.Random(7).shuffle(order)
    async with aiohttp.ClientSession() as http:
        url = await create(http, node, len(data))
        for n in [*order, 0]:
            await put_chunk(http, node, url, data, n)
            assert spool_files(fleet.root, 0) <= HOLD_PARTS
        assert await complete(http, node, url) == hashlib.sha256(data).hexdigest()
        counters = await hash_counters(http, node)
    assert counters["freight_hash_read_back_bytes"] == 0
    assert counters["freight_hash_held_bytes"] == (parts - 1) * PART_SIZE
    assert spool_files(fleet.root, 0) == 0


async def test_reversed_parts_beyond_the_hold_are_read_back_at_finish_only(
    fleet: Fleet,
) -> None:
    node = fleet.start_node()
    parts = HOLD_PARTS + 3
    data = os.urandom(parts * PART_SIZE)
    async with aiohttp.ClientSession() as http:
        url = await create(http, node, len(data))
        for n in reversed(range(parts)):
            await put_chunk(http, node, url, data, n)
            assert spool_files(fleet.root, 0) <= HOLD_PARTS  # the spool stays bounded
        assert await complete(http, node, url) == hashlib.sha256(data).hexdigest()
        counters = await hash_counters(http, node)
    # Part 0 was hashed as it arrived; the spool held the parts nearest it (1..HOLD_PARTS)
    # and only the parts past them come back from the finished object.
    assert counters["freight_hash_held_bytes"] == HOLD_PARTS * PART_SIZE
    assert counters["freight_hash_read_back_bytes"] == (parts - 1 - HOLD_PARTS) * PART_SIZE


async def test_out_of_order_parts_over_two_nodes(fleet: Fleet) -> None:
    a, b = fleet.start_node(), fleet.start_node()
    parts = 6
    data = os.urandom(parts * PART_SIZE)
    async with aiohttp.ClientSession() as http:
        url = await create(http, a, len(data))
        await put_chunk(http, b, url, data, 0)  # B's hash is at part 1, saved
        for n in (2, 1):  # A completes the prefix to part 3: hashes 1 and 2 from its spool
            await put_chunk(http, a, url, data, n)
        await put_chunk(http, b, url, data, 5)  # held by B only
        await put_chunk(http, a, url, data, 3)
        await put_chunk(http, a, url, data, 4)  # A's prefix reaches part 5, which A lacks
        assert await complete(http, b, url) == hashlib.sha256(data).hexdigest()
        on_a, on_b = await hash_counters(http, a), await hash_counters(http, b)
    assert on_a["freight_hash_held_bytes"] == 1 * PART_SIZE
    # Part 5 went up from B's spool, past A's prefix: B finishes, reading it back only.
    assert on_a["freight_hash_read_back_bytes"] + on_b["freight_hash_read_back_bytes"] == PART_SIZE


async def test_four_parallel_chunk_streams_read_nothing_back_at_finish(
    fleet: Fleet, tmp_path: Path
) -> None:
    """``freight send --protocol chunks --parallel 4``: chunks finish out of order, and
    every one is hashed from the spool by the node, none read back from the object."""
    node = fleet.start_node()
    path = tmp_path / "f.bin"
    data = os.urandom(10 * PART_SIZE + 12345)
    path.write_bytes(data)
    options = TransferOptions(resume_store=ResumeStore(tmp_path / "state"))
    result = await UPLOADERS["chunks"](path, node.url, options, parallel=4)
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    async with aiohttp.ClientSession() as http:
        counters = await hash_counters(http, node)
    assert counters["freight_hash_read_back_bytes"] == 0
    assert spool_files(fleet.root, 0) == 0
