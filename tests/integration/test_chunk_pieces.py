"""Pieces of chunks (``Content-Range`` on a chunk PUT) against a real server on loopback.

A client on a link that drops connections more often than a chunk takes to send can send a
chunk in pieces. Every JSON answer is validated against the OpenAPI document (``ChunkApi``),
and after every refused piece the stored bytes and the status are checked unchanged.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from test_chunk_api import ChunkApi, content_digest, streamed
from tus_fixtures import LiveServer, live_server

from freight.core import RangeSet
from freight.server.chunk_layout import POLICY, ChunkLayout

KiB = 1024
MiB = 1024 * KiB
CHUNK = 1 * MiB
PIECE = POLICY.min_piece  # 256 KiB: four pieces to a chunk
SIZE = 3 * CHUNK + 1000  # chunks 0-2 whole, chunk 3 of 1000 bytes
UPLOADS = "/api/uploads"


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
    assert created["chunk_size"] == CHUNK and created["min_piece_size"] == PIECE
    return created["id"], data


def piece_range(n: int, first: int, last: int, length: int = CHUNK) -> dict[str, str]:
    return {"Content-Range": f"bytes {first}-{last}/{length}"}


async def put_piece(
    api: ChunkApi, upload_id: str, data: bytes, n: int, first: int, end: int, **headers: str
) -> tuple[int, Any]:
    """PUT bytes ``[first, end)`` of chunk ``n`` (offsets inside the chunk)."""
    chunk_start = n * CHUNK
    length = min(CHUNK, len(data) - chunk_start)
    body = data[chunk_start + first : chunk_start + end]
    sent = {**piece_range(n, first, end - 1, length), **headers}
    return await api.put(upload_id, n, body, sent)


async def test_a_piece_is_kept_and_the_status_lists_the_missing_bytes(
    api: ChunkApi, upload: tuple[str, bytes]
) -> None:
    upload_id, data = upload
    status, answer = await put_piece(api, upload_id, data, 1, 0, PIECE)
    assert status == 200, answer
    assert answer["duplicate"] is False and answer["chunk_complete"] is False
    assert answer["received_bytes"] == PIECE
    state = await api.state(upload_id)
    assert state["missing"] == [[0, 4]]  # a chunk partly received is still missing
    assert state["missing_bytes"] == [[CHUNK + PIECE, 2 * CHUNK]]
    assert state["min_piece_size"] == PIECE
    _, stored = await api.stored(upload_id)
    assert stored == hashlib.sha256(data[CHUNK : CHUNK + PIECE]).hexdigest()


async def test_a_duplicate_piece_is_drained_and_not_written(
    api: ChunkApi, upload: tuple[str, bytes]
) -> None:
    upload_id, data = upload
    assert (await put_piece(api, upload_id, data, 0, 0, 2 * PIECE))[0] == 200
    before = await api.stored(upload_id)
    other = bytes(PIECE)  # the right length, other bytes: must not replace what is stored
    for first in (0, PIECE):  # all of it inside what is received
        header = piece_range(0, first, first + PIECE - 1)
        status, answer = await api.put(upload_id, 0, other, header)
        assert status == 200 and answer["duplicate"] is True, answer
        assert answer["chunk_complete"] is False
    status, answer = await api.put(
        upload_id, 0, streamed(data[:PIECE]), piece_range(0, 0, PIECE - 1)
    )
    assert status == 200 and answer["duplicate"] is True
    assert await api.stored(upload_id) == before


async def test_pieces_complete_a_chunk_which_then_counts_received(
    api: ChunkApi, upload: tuple[str, bytes]
) -> None:
    upload_id, data = upload
    # Pieces need not be aligned or equal: any length from min_piece_size, the last shorter.
    cuts = [0, 300_000, 300_000 + PIECE, CHUNK - 1000, CHUNK]
    for first, end in itertools.pairwise(cuts):
        status, answer = await put_piece(api, upload_id, data, 2, first, end)
        assert status == 200 and answer["duplicate"] is False, (first, answer)
        assert answer["chunk_complete"] is (end == CHUNK)
    state = await api.state(upload_id)
    assert state["missing"] == [[0, 2], [3, 4]]
    assert state["missing_bytes"] == []
    # The whole chunk sent again is a duplicate, as for a chunk sent whole.
    status, answer = await api.put(upload_id, 2, data[2 * CHUNK : 3 * CHUNK])
    assert status == 200 and answer["duplicate"] is True and answer["chunk_complete"] is True


async def test_an_upload_sent_in_pieces_completes_with_the_right_sha256(
    api: ChunkApi, upload: tuple[str, bytes]
) -> None:
    upload_id, data = upload
    assert (await api.put(upload_id, 1, data[CHUNK : 2 * CHUNK]))[0] == 200  # whole
    for n in (0, 2):  # in pieces, chunk 2 before chunk 0's second piece
        assert (await put_piece(api, upload_id, data, n, 0, PIECE))[0] == 200
    for n in (2, 0):
        assert (await put_piece(api, upload_id, data, n, PIECE, CHUNK))[0] == 200
    status, answer = await api.complete(upload_id)
    assert status == 409 and answer["missing"] == [[3, 4]] and answer["missing_bytes"] == []
    assert (await put_piece(api, upload_id, data, 3, 0, 1000))[0] == 200  # the short last chunk
    status, answer = await api.complete(upload_id, hashlib.sha256(data).hexdigest())
    assert status == 200, answer
    async with api.live.http.get(api.live.url + answer["url"]) as resp:
        assert resp.status == 200 and await resp.read() == data


async def test_completing_lists_the_missing_bytes_of_a_partial_chunk(
    api: ChunkApi, upload: tuple[str, bytes]
) -> None:
    upload_id, data = upload
    for n in range(4):
        end = PIECE if n == 1 else min(CHUNK, SIZE - n * CHUNK)
        assert (await put_piece(api, upload_id, data, n, 0, end))[0] == 200
    status, answer = await api.complete(upload_id)
    assert status == 409 and answer["code"] == "ERR_UPLOAD_INCOMPLETE"
    assert answer["missing"] == [[1, 2]]
    assert answer["missing_bytes"] == [[CHUNK + PIECE, 2 * CHUNK]]


async def test_a_piece_past_its_chunk_is_refused(api: ChunkApi, upload: tuple[str, bytes]) -> None:
    upload_id, data = upload
    before = await api.stored(upload_id)
    body = data[:PIECE]
    not_satisfiable = [
        (0, f"bytes 0-{PIECE - 1}/{2 * CHUNK}"),  # the chunk is not that long
        (0, f"bytes {CHUNK - PIECE + 1}-{CHUNK}/*"),  # ends one byte past the chunk
        (3, f"bytes 0-{PIECE - 1}/{PIECE}"),  # chunk 3 has 1000 bytes
    ]
    for n, header in not_satisfiable:
        status, answer = await api.call(
            "PUT", "/api/uploads/{upload_id}/chunks/{n}", f"{UPLOADS}/{upload_id}/chunks/{n}",
            data=body, headers={"Content-Range": header},
        )  # fmt: skip
        assert status == 416 and answer["code"] == "ERR_RANGE_NOT_SATISFIABLE", header
        assert answer["size"] == (1000 if n == 3 else CHUNK)
    async with api.live.http.put(
        f"{api.live.url}{UPLOADS}/{upload_id}/chunks/3",
        data=body,
        headers={"Content-Range": f"bytes 0-{PIECE - 1}/*"},
    ) as resp:
        assert resp.status == 416 and resp.headers["Content-Range"] == "bytes */1000"
    invalid = [
        f"bytes 0-{CHUNK}/{CHUNK}",  # RFC 9110: a length at or below the last byte is invalid
        f"bytes {PIECE}-0/{CHUNK}",  # last before first
        f"bytes=0-{PIECE - 1}/{CHUNK}",  # a Range header's syntax
        f"bytes 0-{PIECE - 1}",
        f"items 0-{PIECE - 1}/{CHUNK}",
        "bytes 0-" + "9" * 30 + f"/{CHUNK}",
    ]
    for header in invalid:
        status, answer = await api.put(upload_id, 0, body, {"Content-Range": header})
        assert status == 400 and answer["code"] == "ERR_INVALID_HEADER", (header, answer)
    assert await api.stored(upload_id) == before


async def test_pieces_that_would_split_a_chunk_are_refused(
    api: ChunkApi, upload: tuple[str, bytes]
) -> None:
    """A piece must start where its chunk's received bytes end, so a chunk never holds more
    than one received run and an upload never more runs than chunks."""
    upload_id, data = upload
    status, answer = await put_piece(api, upload_id, data, 0, PIECE, 2 * PIECE)
    assert status == 409 and answer["code"] == "ERR_PIECE_OFFSET" and answer["chunk_offset"] == 0
    assert (await put_piece(api, upload_id, data, 0, 0, PIECE))[0] == 200
    before = await api.stored(upload_id)
    refused = [
        (2 * PIECE, 3 * PIECE),  # leaves a gap after the received bytes
        (PIECE // 2, PIECE // 2 + PIECE),  # overlaps them in part
        (0, 2 * PIECE),  # overlaps them in part, from the chunk's first byte
        (0, CHUNK),  # the whole chunk, named as a piece
    ]
    for first, end in refused:
        status, answer = await put_piece(api, upload_id, data, 0, first, end)
        assert status == 409 and answer["code"] == "ERR_PIECE_OFFSET", (first, answer)
        assert answer["chunk_offset"] == PIECE
    assert await api.stored(upload_id) == before
    assert (await api.state(upload_id))["missing_bytes"] == [[PIECE, CHUNK]]


async def test_a_piece_shorter_than_the_minimum_is_refused_unless_it_ends_the_chunk(
    api: ChunkApi, upload: tuple[str, bytes]
) -> None:
    upload_id, data = upload
    status, answer = await put_piece(api, upload_id, data, 0, 0, PIECE - 1)
    assert status == 400 and answer["code"] == "ERR_BAD_REQUEST"
    assert str(PIECE) in answer["message"]
    assert (await api.state(upload_id))["received_bytes"] == 0
    assert (await put_piece(api, upload_id, data, 0, 0, CHUNK - 1000))[0] == 200
    status, answer = await put_piece(api, upload_id, data, 0, CHUNK - 1000, CHUNK)
    assert status == 200 and answer["chunk_complete"] is True


async def test_a_piece_body_of_the_wrong_length_is_refused(
    api: ChunkApi, upload: tuple[str, bytes]
) -> None:
    upload_id, data = upload
    header = piece_range(0, 0, PIECE - 1)
    for body in (data[: PIECE - 1], data[: PIECE + 1], streamed(data[: PIECE + 1])):
        status, answer = await api.put(upload_id, 0, body, header)
        assert status == 400 and answer["code"] == "ERR_LENGTH_MISMATCH", answer
    assert (await api.state(upload_id))["received_bytes"] == 0


async def test_content_digest_covers_the_piece(api: ChunkApi, upload: tuple[str, bytes]) -> None:
    upload_id, data = upload
    piece = data[:PIECE]
    whole_chunk = {"Content-Digest": content_digest(data[:CHUNK])}
    status, answer = await put_piece(api, upload_id, data, 0, 0, PIECE, **whole_chunk)
    assert status == 422 and answer["code"] == "ERR_CHECKSUM_MISMATCH"
    assert (await api.state(upload_id))["received_bytes"] == 0
    own = {"Content-Digest": content_digest(piece)}
    status, answer = await put_piece(api, upload_id, data, 0, 0, PIECE, **own)
    assert status == 200 and answer["duplicate"] is False
    assert (await api.state(upload_id))["missing_bytes"] == [[PIECE, CHUNK]]


async def test_an_interrupted_piece_keeps_what_arrived(
    api: ChunkApi, upload: tuple[str, bytes]
) -> None:
    """A piece cut short keeps the bytes that arrived (its chunk's received run grows); the
    piece sent again from its old start is told where the chunk now ends."""
    upload_id, data = upload
    assert (await put_piece(api, upload_id, data, 1, 0, PIECE))[0] == 200
    host, port = api.live.url.removeprefix("http://").split(":")
    _, writer = await asyncio.open_connection(host, int(port))
    head = (
        f"PUT {UPLOADS}/{upload_id}/chunks/1 HTTP/1.1\r\nHost: {host}\r\n"
        f"Content-Length: {2 * PIECE}\r\nContent-Range: bytes {PIECE}-{3 * PIECE - 1}/{CHUNK}\r\n"
        "Content-Type: application/octet-stream\r\n\r\n"
    )
    writer.write(head.encode() + data[CHUNK + PIECE : CHUNK + 2 * PIECE])
    await writer.drain()
    await asyncio.sleep(0.2)  # let the server write what it got
    writer.transport.abort()
    for _ in range(100):
        if (await api.state(upload_id))["received_bytes"] == 2 * PIECE:
            break
        await asyncio.sleep(0.05)
    assert (await api.state(upload_id))["missing_bytes"] == [[CHUNK + 2 * PIECE, 2 * CHUNK]]
    status, answer = await put_piece(api, upload_id, data, 1, PIECE, 3 * PIECE)
    assert status == 409 and answer["chunk_offset"] == 2 * PIECE, answer
    status, answer = await put_piece(api, upload_id, data, 1, 2 * PIECE, 3 * PIECE)
    assert status == 200 and answer["duplicate"] is False, answer
    assert (await api.state(upload_id))["missing_bytes"] == [[CHUNK + 3 * PIECE, 2 * CHUNK]]


# the layout, without a server ------------------------------------------------------------


def test_missing_bytes_name_only_chunks_partly_received() -> None:
    layout = ChunkLayout(size=4 * CHUNK + 10, chunk_size=CHUNK)
    received = RangeSet([(0, 100), (CHUNK, 2 * CHUNK + 5), (3 * CHUNK + 7, 3 * CHUNK + 9)])
    assert layout.missing(received) == [[0, 1], [2, 5]]
    assert layout.missing_bytes(received) == [
        [100, CHUNK],
        [2 * CHUNK + 5, 3 * CHUNK],
        [3 * CHUNK, 3 * CHUNK + 7],
        [3 * CHUNK + 9, 4 * CHUNK],
    ]
    assert layout.missing_bytes(RangeSet()) == []
    assert layout.missing_bytes(RangeSet([(0, 4 * CHUNK + 10)])) == []
    tail = RangeSet([(0, 4 * CHUNK + 3)])
    assert layout.missing_bytes(tail) == [[4 * CHUNK + 3, 4 * CHUNK + 10]]
