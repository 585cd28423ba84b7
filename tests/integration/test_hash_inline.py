"""The running SHA-256 takes bytes that pass through Python from the writer's buffers and
reads back from the page cache only the rest (spliced bodies, chunks out of order).

Each test counts what the hash follower read back (``followed_bytes``) and what finishing
read (``settled_bytes``): the bytes sent over WebSocket must be in neither, and every digest
must be right whichever mix of protocols wrote the upload.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from freight.core import UploadEngine
from freight.core.hash_follower import HashFollower

from .helpers import MiB, PatternStream
from .test_ws_upload import MAX_FRAME, LiveWs, frames, ws_server

CHUNK = 8 * MiB  # tus bodies and chunks this large are spliced, so the follower hashes them


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[LiveWs]:
    async with ws_server(tmp_path / "data") as server:
        yield server


def read_back(engine: UploadEngine) -> int:
    """Bytes the running hash read from the store rather than from writers' buffers."""
    follower: HashFollower = engine.hash_follower
    return follower.followed_bytes + follower.settled_bytes


async def ws_send(live: LiveWs, upload_id: str, data: PatternStream, end: int) -> int:
    """Resume ``upload_id`` over WebSocket, send up to ``end`` and drop the socket;
    returns the offset it resumed from."""
    async with live.resume(upload_id) as (ws, ready):
        assert ready["op"] == "ready", ready
        await ws.stream(ready, frames(data.chunks(ready["offset"], end), MAX_FRAME))
        await asyncio.sleep(0.2)  # for the server to read it all off the socket
        ws.transport().abort()  # a pulled cable: what arrived is kept
    await settled(live, upload_id, end)
    offset = ready["offset"]
    assert isinstance(offset, int)
    return offset


async def settled(live: LiveWs, upload_id: str, offset: int) -> None:
    for _ in range(400):
        if await live.offset(upload_id) >= offset:
            return
        await asyncio.sleep(0.025)
    raise AssertionError(f"upload {upload_id} stayed at {await live.offset(upload_id)}")


async def test_a_ws_upload_resumed_at_an_odd_offset_is_hashed_as_it_passes(
    live: LiveWs,
) -> None:
    data = PatternStream(3 * CHUNK + 1001, seed=7)
    odd = CHUNK + 12_345
    async with live.connect() as ws:
        await ws.send(op="start", name="odd.bin", size=data.size)
        ready = await ws.reply()
        await ws.stream(ready, frames(data.chunks(0, odd), MAX_FRAME))
        await asyncio.sleep(0.2)
        ws.transport().abort()
    await settled(live, ready["id"], odd)
    async with live.resume(ready["id"]) as (ws, again):
        assert again["offset"] == odd
        await ws.stream(again, frames(data.chunks(odd), MAX_FRAME))
        await ws.send(op="done", sha256=data.sha256())
        finished = await ws.finished()
    assert finished["sha256"] == data.sha256()
    assert read_back(live.engine) == 0


async def test_a_ws_tus_and_chunks_upload_reads_back_only_what_was_not_hashed_inline(
    live: LiveWs,
) -> None:
    """WebSocket to an odd offset, a spliced tus PATCH to a chunk boundary, WebSocket for
    a chunk (joining the hash the follower brings up to it), then the last two chunks out
    of order through the chunk API."""
    data = PatternStream(4 * CHUNK + 1000, seed=11)
    body = {"name": "mixed.bin", "size": data.size, "chunk_size": CHUNK}
    async with live.http.post(f"{live.url}/api/uploads", json=body) as resp:
        assert resp.status == 201, await resp.text()
        upload_id = (await resp.json())["id"]
    odd = CHUNK + 12_345
    assert await ws_send(live, upload_id, data, odd) == 0
    tus = {"Tus-Resumable": "1.0.0", "Content-Type": "application/offset+octet-stream"}
    async with live.http.patch(
        f"{live.url}/files/{upload_id}",
        data=b"".join(data.chunks(odd, 2 * CHUNK)),
        headers={**tus, "Upload-Offset": str(odd)},
    ) as resp:
        assert resp.status == 204, await resp.text()
    assert await ws_send(live, upload_id, data, 3 * CHUNK) == 2 * CHUNK
    for n in (4, 3):
        part = b"".join(data.chunks(n * CHUNK, min(data.size, (n + 1) * CHUNK)))
        url = f"{live.url}/api/uploads/{upload_id}/chunks/{n}"
        async with live.http.put(url, data=part) as put:
            assert put.status == 200, await put.text()
    async with live.http.post(f"{live.url}/api/uploads/{upload_id}/complete") as resp:
        assert resp.status == 200, await resp.text()
        done = await resp.json()
    assert done["sha256"] == data.sha256()
    with (live.data_dir / "files" / upload_id).open("rb") as file:
        assert hashlib.file_digest(file, "sha256").hexdigest() == data.sha256()
    # Only the tus body and the two chunks may be read back; the WebSocket bytes never.
    by_ws = odd + CHUNK
    assert 0 < read_back(live.engine) <= data.size - by_ws
