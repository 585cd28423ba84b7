"""The chunk API on a fleet node: a chunk is a part, and the smallest piece it takes is a
whole chunk, so no chunk is stored as pieces (objects of their own, sent again inside
their part)."""

from __future__ import annotations

import os

import aiohttp

from tests.fleet.conftest import PART_SIZE, Fleet, MiB


async def test_a_fleet_node_takes_whole_chunks_only(fleet: Fleet) -> None:
    node = fleet.start_node()
    data = os.urandom(2 * PART_SIZE + MiB)
    async with aiohttp.ClientSession() as http:
        async with http.post(
            node.url + "/api/uploads", json={"name": "a.bin", "size": len(data)}
        ) as resp:
            assert resp.status == 201
            created = await resp.json()
        assert created["chunk_size"] == PART_SIZE
        assert created["min_piece_size"] == PART_SIZE
        url = node.url + created["upload_url"]
        async with http.get(url) as resp:
            assert (await resp.json())["min_piece_size"] == PART_SIZE

        # A piece short of its chunk's end is refused; one that ends it is taken.
        short = {"Content-Range": f"bytes 0-{MiB - 1}/{PART_SIZE}"}
        async with http.put(url + "/chunks/0", data=data[:MiB], headers=short) as resp:
            assert resp.status == 400, await resp.text()
        for n in range(3):
            body = data[n * PART_SIZE : (n + 1) * PART_SIZE]
            async with http.put(f"{url}/chunks/{n}", data=body) as resp:
                assert resp.status == 200, await resp.text()
        async with http.post(url + "/complete", json={}) as resp:
            assert resp.status == 200, await resp.text()
