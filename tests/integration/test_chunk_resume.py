"""A chunk PUT cut midway keeps what arrived, against a real server on loopback.

The cut is a real one: a raw socket sends the head and part of the body, then is aborted.
What arrived shows in ``missing_bytes``; the rest follows as a piece or in a retried whole
chunk; a body with a ``Content-Digest`` keeps nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from test_chunk_api import ChunkApi, content_digest
from tus_fixtures import LiveServer, live_server

from freight.server.chunk_layout import POLICY

KiB = 1024
MiB = 1024 * KiB
CHUNK = 1 * MiB
SIZE = 3 * CHUNK + 1000
UPLOADS = "/api/uploads"
# Off every buffer and piece boundary.
CUT = 400 * KiB + 123


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[LiveServer]:
    async with live_server(tmp_path / "data", max_size=64 * MiB) as server:
        yield server


@pytest.fixture
async def api(live: LiveServer) -> ChunkApi:
    async with live.http.get(f"{live.url}/api/openapi.json") as resp:
        assert resp.status == 200
        return ChunkApi(live, await resp.json())


@pytest.fixture
async def upload(api: ChunkApi) -> tuple[str, bytes]:
    data = os.urandom(SIZE)
    created = await api.create(len(data), chunk_size=CHUNK)
    assert created["chunk_size"] == CHUNK
    return created["id"], data


async def cut_put(
    api: ChunkApi, upload_id: str, n: int, body: bytes, sent: int, **headers: str
) -> None:
    """PUT ``body`` as chunk ``n`` on a raw socket, and abort the link after ``sent`` bytes."""
    host, port = api.live.url.removeprefix("http://").split(":")
    _, writer = await asyncio.open_connection(host, int(port))
    lines = [f"PUT {UPLOADS}/{upload_id}/chunks/{n} HTTP/1.1", f"Host: {host}"]
    lines += [f"Content-Length: {len(body)}", "Content-Type: application/octet-stream"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body[:sent])
    await writer.drain()
    await asyncio.sleep(0.3)  # let the server take what was sent
    writer.transport.abort()


async def settled(api: ChunkApi, upload_id: str) -> dict[str, Any]:
    """The status once the server has finished with the cut request (its claim is gone:
    a whole chunk PUT of that chunk no longer gets a 423)."""
    for _ in range(100):
        state = await api.state(upload_id)
        await asyncio.sleep(0.1)
        if await api.state(upload_id) == state:
            return state
    raise AssertionError("the status never settled")


def piece_headers(first: int, last: int, length: int = CHUNK) -> dict[str, str]:
    return {"Content-Range": f"bytes {first}-{last}/{length}"}


async def finish(api: ChunkApi, upload_id: str, data: bytes, skip: tuple[int, ...]) -> None:
    for n in range(-(-len(data) // CHUNK)):
        if n not in skip:
            status, answer = await api.put(upload_id, n, data[n * CHUNK : (n + 1) * CHUNK])
            assert status == 200, answer
    status, answer = await api.complete(upload_id, hashlib.sha256(data).hexdigest())
    assert status == 200, answer
    assert answer["sha256"] == hashlib.sha256(data).hexdigest()


async def test_a_cut_chunk_keeps_what_arrived_and_the_rest_follows_as_a_piece(
    api: ChunkApi, upload: tuple[str, bytes]
) -> None:
    upload_id, data = upload
    chunk = data[CHUNK : 2 * CHUNK]
    await cut_put(api, upload_id, 1, chunk, CUT)
    state = await settled(api, upload_id)
    assert state["received_bytes"] == CUT
    assert state["missing"] == [[0, 4]]
    assert state["missing_bytes"] == [[CHUNK + CUT, 2 * CHUNK]]
    rest = chunk[CUT:]
    status, answer = await api.put(upload_id, 1, rest, piece_headers(CUT, CHUNK - 1))
    assert status == 200 and answer["chunk_complete"] is True, answer
    assert (await api.state(upload_id))["missing"] == [[0, 1], [2, 4]]
    await finish(api, upload_id, data, skip=(1,))


async def test_a_cut_chunk_with_a_digest_keeps_nothing(
    api: ChunkApi, upload: tuple[str, bytes]
) -> None:
    upload_id, data = upload
    chunk = data[CHUNK : 2 * CHUNK]
    await cut_put(api, upload_id, 1, chunk, CUT, Content_Digest=content_digest(chunk))
    state = await settled(api, upload_id)
    assert state["received_bytes"] == 0 and state["missing_bytes"] == []
    await finish(api, upload_id, data, skip=())


@pytest.mark.parametrize("digest", [False, True], ids=["plain", "with-digest"])
async def test_a_whole_chunk_sent_again_after_a_cut_fills_in_the_rest(
    api: ChunkApi, upload: tuple[str, bytes], digest: bool
) -> None:
    """A client that knows no pieces retries the whole chunk: the kept bytes are read and
    dropped, the rest written; a digest of the retry covers its whole body."""
    upload_id, data = upload
    chunk = data[CHUNK : 2 * CHUNK]
    await cut_put(api, upload_id, 1, chunk, CUT)
    assert (await settled(api, upload_id))["received_bytes"] == CUT
    headers = {"Content-Digest": content_digest(chunk)} if digest else {}
    status, answer = await api.put(upload_id, 1, chunk, headers)
    assert status == 200, answer
    assert answer["duplicate"] is False and answer["chunk_complete"] is True
    assert answer["received_bytes"] == CHUNK
    await finish(api, upload_id, data, skip=(1,))


async def test_a_whole_chunk_sent_again_is_checked_against_its_digest(
    api: ChunkApi, upload: tuple[str, bytes]
) -> None:
    """The skipped bytes still count toward the retry's digest: a digest of the rest
    alone does not match."""
    upload_id, data = upload
    chunk = data[CHUNK : 2 * CHUNK]
    await cut_put(api, upload_id, 1, chunk, CUT)
    assert (await settled(api, upload_id))["received_bytes"] == CUT
    wrong = {"Content-Digest": content_digest(chunk[CUT:])}
    status, answer = await api.put(upload_id, 1, chunk, wrong)
    assert status == 422 and answer["code"] == "ERR_CHECKSUM_MISMATCH", answer
    assert (await api.state(upload_id))["received_bytes"] == CUT


async def test_a_cut_piece_of_the_last_chunk_then_a_short_rest(
    api: ChunkApi, upload: tuple[str, bytes]
) -> None:
    """The rest of a cut chunk may be shorter than ``min_piece_size``: it ends the chunk."""
    upload_id, data = upload
    chunk = data[CHUNK : 2 * CHUNK]
    sent = CHUNK - POLICY.min_piece // 2
    await cut_put(api, upload_id, 1, chunk, sent)
    assert (await settled(api, upload_id))["missing_bytes"] == [[CHUNK + sent, 2 * CHUNK]]
    status, answer = await api.put(upload_id, 1, chunk[sent:], piece_headers(sent, CHUNK - 1))
    assert status == 200 and answer["chunk_complete"] is True, answer
    await finish(api, upload_id, data, skip=(1,))


async def expect_put(
    api: ChunkApi, upload_id: str, n: int, body: bytes, **headers: str
) -> tuple[bytes, int]:
    """PUT with ``Expect: 100-continue`` on a raw socket, sending the body only if asked:
    the server's first answer line, and how many body bytes went out."""
    host, port = api.live.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    lines = [f"PUT {UPLOADS}/{upload_id}/chunks/{n} HTTP/1.1", f"Host: {host}"]
    lines += [f"Content-Length: {len(body)}", "Content-Type: application/octet-stream"]
    lines += ["Expect: 100-continue"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    first = await asyncio.wait_for(reader.readline(), 10)
    sent = 0
    if b" 100 " in first:
        await reader.readline()  # the blank line ending the interim answer
        writer.write(body)
        sent = len(body)
        first = await asyncio.wait_for(reader.readline(), 10)
    writer.close()
    return first, sent


async def test_expect_continue_asks_for_no_body_it_does_not_want(
    api: ChunkApi, upload: tuple[str, bytes]
) -> None:
    """The ``100 Continue`` comes once the server wants the body: a duplicate and a refused
    piece are answered before any of it is sent."""
    upload_id, data = upload
    chunk = data[:CHUNK]
    first, sent = await expect_put(api, upload_id, 0, chunk)
    assert first.startswith(b"HTTP/1.1 200") and sent == CHUNK
    first, sent = await expect_put(api, upload_id, 0, chunk)
    assert first.startswith(b"HTTP/1.1 200") and sent == 0  # a duplicate
    await cut_put(api, upload_id, 1, data[CHUNK : 2 * CHUNK], CUT)
    assert (await settled(api, upload_id))["received_bytes"] == CHUNK + CUT
    wrong = piece_headers(0, CHUNK - 1)
    first, sent = await expect_put(api, upload_id, 1, data[CHUNK : 2 * CHUNK], **wrong)
    assert first.startswith(b"HTTP/1.1 409") and sent == 0
    state = await api.state(upload_id)
    assert state["wire_bytes"] == CHUNK + CUT  # each body byte that was sent, once
    assert state["missing_bytes"] == [[CHUNK + CUT, 2 * CHUNK]]
