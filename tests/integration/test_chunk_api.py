"""The chunk API (``/api/uploads``) against a real server on a loopback socket.

Every JSON answer is validated against the server's own OpenAPI document, and after every
rejected request the stored bytes (the part file's content over the received ranges) and
the status (all but ``wire_bytes``, which counts rejected bodies too) are checked unchanged.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import ClientSession
from jsonschema import Draft202012Validator
from tus_fixtures import LiveServer, live_server, open_stored

from freight.server.chunks import POLICY, ChunkPolicy

KiB = 1024
MiB = 1024 * KiB
CHUNK = 256 * KiB  # the smallest chunk the server allows: many chunks from little data

UPLOADS = "/api/uploads"
ONE = "/api/uploads/{upload_id}"
CHUNK_PATH = "/api/uploads/{upload_id}/chunks/{n}"
COMPLETE = "/api/uploads/{upload_id}/complete"


class ChunkApi:
    """Calls the chunk API and checks each answer against the OpenAPI document."""

    def __init__(self, live: LiveServer, document: dict[str, Any]) -> None:
        self.live = live
        self.document = document

    async def call(self, method: str, template: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        async with self.live.http.request(method, self.live.url + path, **kwargs) as resp:
            raw = await resp.read()
            body = json.loads(raw) if raw else None
            self.check(template, method, resp.status, body, resp.content_type)
            return resp.status, body

    def check(self, template: str, method: str, status: int, body: Any, content_type: str) -> None:
        responses = self.document["paths"][template][method.lower()]["responses"]
        assert str(status) in responses, f"{method} {template} answered undocumented {status}"
        content = responses[str(status)].get("content")
        if content is None:
            assert body is None, body
            return
        assert content_type == "application/json"
        schema = content["application/json"]["schema"]
        # OpenAPI 3.1 schemas are JSON Schema 2020-12; refs point into the document's components.
        Draft202012Validator({**schema, "components": self.document["components"]}).validate(body)

    async def create(self, size: int, **fields: Any) -> dict[str, Any]:
        status, body = await self.call(
            "POST", UPLOADS, UPLOADS, json={"name": "disk.img", "size": size, **fields}
        )
        assert status == 201, body
        return dict(body)

    async def put(
        self, upload_id: str, n: int | str, data: Any, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        path = f"{UPLOADS}/{upload_id}/chunks/{n}"
        return await self.call("PUT", CHUNK_PATH, path, data=data, headers=headers or {})

    async def status(self, upload_id: str) -> tuple[int, Any]:
        return await self.call("GET", ONE, f"{UPLOADS}/{upload_id}")

    async def state(self, upload_id: str) -> dict[str, Any]:
        status, body = await self.status(upload_id)
        assert status == 200, body
        return dict(body)

    async def complete(self, upload_id: str, sha256: str | None = None) -> tuple[int, Any]:
        payload = {} if sha256 is None else {"sha256": sha256}
        return await self.call("POST", COMPLETE, f"{UPLOADS}/{upload_id}/complete", json=payload)

    async def delete(self, upload_id: str) -> tuple[int, Any]:
        return await self.call("DELETE", ONE, f"{UPLOADS}/{upload_id}")

    async def stored(self, upload_id: str) -> tuple[dict[str, Any], str]:
        """What the server holds: its status (less wire_bytes) and the received bytes' hash."""
        state = await self.state(upload_id)
        del state["wire_bytes"]
        session = await self.live.engine.get(upload_id)
        digest = hashlib.sha256()
        with open_stored(self.live.data_dir, upload_id) as file:
            for start, end in session.received:
                file.seek(start)
                digest.update(file.read(end - start))
        return state, digest.hexdigest()


def chunk_of(data: bytes, n: int, size: int = CHUNK) -> bytes:
    return data[n * size : (n + 1) * size]


def content_digest(data: bytes, algorithm: str = "sha-256") -> str:
    raw = hashlib.new(algorithm.replace("-", ""), data).digest()
    return f"{algorithm}=:{base64.b64encode(raw).decode()}:"


async def streamed(data: bytes, piece: int = 64 * KiB) -> AsyncIterator[bytes]:
    """A body of unknown length (chunked encoding)."""
    for start in range(0, len(data), piece):
        yield data[start : start + piece]


async def _api(live: LiveServer) -> ChunkApi:
    async with live.http.get(f"{live.url}/api/openapi.json") as resp:
        assert resp.status == 200
        return ChunkApi(live, await resp.json())


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[LiveServer]:
    async with live_server(tmp_path / "data", max_size=64 * MiB) as server:
        yield server


@pytest.fixture
async def api(live: LiveServer) -> ChunkApi:
    return await _api(live)


@pytest.fixture
async def started(api: ChunkApi) -> tuple[str, bytes]:
    """A 5-chunk upload (the last chunk short) with chunk 1 stored."""
    data = os.urandom(4 * CHUNK + 1000)
    created = await api.create(len(data), chunk_size=CHUNK)
    status, _ = await api.put(created["id"], 1, chunk_of(data, 1))
    assert status == 200
    return created["id"], data


# creating ------------------------------------------------------------------------------


async def test_create_answers_the_layout_and_sanitises_the_name(api: ChunkApi) -> None:
    created = await api.create(25 * MiB, name="../../etc/\u202epasswd")
    assert created["name"] == "passwd"
    assert created["chunk_size"] == POLICY.default == 10 * MiB
    assert created["chunk_count"] == 3
    assert created["upload_url"] == f"{UPLOADS}/{created['id']}"
    state = await api.state(created["id"])
    assert state["missing"] == [[0, 3]] and state["received_bytes"] == 0
    assert state["percent"] == 0 and state["state"] == "receiving"


@pytest.mark.parametrize(
    ("asked", "given"),
    [(1, 256 * KiB), (CHUNK + 1, CHUNK + 1), (1 << 40, 64 * MiB)],
)
async def test_chunk_size_is_clamped(api: ChunkApi, asked: int, given: int) -> None:
    assert (await api.create(MiB, chunk_size=asked))["chunk_size"] == given


def test_chunk_size_grows_so_there_are_never_too_many_chunks() -> None:
    policy = ChunkPolicy()
    huge = 50 * 1024**4  # 50 TiB
    chunk = policy.choose(huge, 1)
    assert -(-huge // chunk) <= policy.max_count
    assert policy.choose(0, None) == policy.default


@pytest.mark.parametrize(
    "body",
    [
        {"size": 10},
        {"name": "", "size": 10},
        {"name": 5, "size": 10},
        {"name": "x" * 5000, "size": 10},
        {"name": "a"},
        {"name": "a", "size": -1},
        {"name": "a", "size": 1.5},
        {"name": "a", "size": "10"},
        {"name": "a", "size": True},
        {"name": "a", "size": 10, "chunk_size": 0},
        {"name": "a", "size": 10, "chunk_size": "big"},
        {"name": "a", "size": 10, "sha256": "abc"},
        {"name": "a", "size": 10, "sha256": "g" * 64},
        ["name", "size"],
    ],
)
async def test_create_refuses_invalid_fields(api: ChunkApi, body: Any) -> None:
    status, answer = await api.call("POST", UPLOADS, UPLOADS, json=body)
    assert status == 400 and answer["code"] == "ERR_BAD_REQUEST", answer
    assert (await api.call("GET", UPLOADS, UPLOADS))[1]["uploads"] == []


async def test_create_refuses_a_body_that_is_not_json(api: ChunkApi) -> None:
    status, answer = await api.call("POST", UPLOADS, UPLOADS, data=b"{name: 1")
    assert status == 400 and "JSON" in answer["message"]


async def test_create_over_max_size_is_413(api: ChunkApi) -> None:
    status, answer = await api.call("POST", UPLOADS, UPLOADS, json={"name": "a", "size": 65 * MiB})
    assert status == 413 and answer["code"] == "ERR_TOO_LARGE"


async def test_create_beyond_free_disk_is_507(tmp_path: Path) -> None:
    async with live_server(tmp_path / "data") as live:
        api = await _api(live)
        body = {"name": "a", "size": 1 << 60}
        status, answer = await api.call("POST", UPLOADS, UPLOADS, json=body)
        assert status == 507 and answer["code"] == "ERR_INSUFFICIENT_STORAGE"


# sending chunks ------------------------------------------------------------------------


async def test_chunks_out_of_order_then_complete_and_download(api: ChunkApi) -> None:
    data = os.urandom(4 * CHUNK + 1000)
    created = await api.create(len(data), chunk_size=CHUNK)
    upload_id = created["id"]
    assert created["chunk_count"] == 5
    expected_missing = {0, 1, 2, 3, 4}
    for n in (4, 2, 0, 3):
        status, answer = await api.put(upload_id, n, chunk_of(data, n))
        assert status == 200 and answer["duplicate"] is False and answer["n"] == n
        expected_missing.discard(n)
    state = await api.state(upload_id)
    assert state["missing"] == [[1, 2]]
    assert state["received_bytes"] == len(data) - CHUNK
    assert state["percent"] == pytest.approx(100 * (len(data) - CHUNK) / len(data), abs=0.01)
    await api.put(upload_id, 1, chunk_of(data, 1))
    status, done = await api.complete(upload_id)
    assert status == 200, done
    assert done["sha256"] == hashlib.sha256(data).hexdigest()
    assert done == {
        "file_id": upload_id,
        "name": "disk.img",
        "size": len(data),
        "sha256": done["sha256"],
        "url": f"/files/{upload_id}",
    }
    async with api.live.http.get(api.live.url + done["url"]) as resp:
        assert resp.status == 200 and await resp.read() == data
    state = await api.state(upload_id)
    assert state["state"] == "finished" and state["missing"] == [] and state["url"] == done["url"]


async def test_concurrent_chunks_of_one_upload(api: ChunkApi) -> None:
    data = os.urandom(12 * CHUNK - 7)
    upload_id = (await api.create(len(data), chunk_size=CHUNK))["id"]
    answers = await asyncio.gather(
        *(api.put(upload_id, n, streamed(chunk_of(data, n))) for n in reversed(range(12)))
    )
    assert [status for status, _ in answers] == [200] * 12
    status, done = await api.complete(upload_id, hashlib.sha256(data).hexdigest())
    assert status == 200 and done["sha256"] == hashlib.sha256(data).hexdigest()
    assert (await api.state(upload_id))["wire_bytes"] == len(data)


async def test_in_order_chunks_are_hashed_as_they_arrive(api: ChunkApi) -> None:
    """The running SHA-256 follows each recorded chunk, so ``complete`` has next to nothing
    left to hash: the hash covers every chunk received so far soon after it is stored."""
    data = os.urandom(6 * CHUNK + 5)
    upload_id = (await api.create(len(data), chunk_size=CHUNK))["id"]
    for n in range(7):
        assert (await api.put(upload_id, n, chunk_of(data, n)))[0] == 200
        session = await api.live.engine.hashed(upload_id)
        assert session.hashed_offset == session.offset == min((n + 1) * CHUNK, len(data))
    status, done = await api.complete(upload_id)
    assert status == 200 and done["sha256"] == hashlib.sha256(data).hexdigest()


async def test_out_of_order_chunks_still_give_the_right_sha256(api: ChunkApi) -> None:
    data = os.urandom(6 * CHUNK + 5)
    upload_id = (await api.create(len(data), chunk_size=CHUNK))["id"]
    for n in (6, 1, 3, 5, 0, 2, 4):
        assert (await api.put(upload_id, n, chunk_of(data, n)))[0] == 200
    status, done = await api.complete(upload_id)
    assert status == 200 and done["sha256"] == hashlib.sha256(data).hexdigest()


async def test_duplicate_chunk_is_drained_and_not_written(
    api: ChunkApi, started: tuple[str, bytes]
) -> None:
    upload_id, data = started
    before = await api.stored(upload_id)
    wire = (await api.state(upload_id))["wire_bytes"]
    other = bytes(CHUNK)  # the right length, different bytes: must not replace what is stored
    status, answer = await api.put(upload_id, 1, other)
    assert status == 200 and answer["duplicate"] is True
    assert answer["wire_bytes"] == wire + CHUNK
    assert await api.stored(upload_id) == before
    status, answer = await api.put(upload_id, 1, streamed(chunk_of(data, 1)))
    assert status == 200 and answer["duplicate"] is True
    assert await api.stored(upload_id) == before


async def test_wrong_length_chunks_are_refused(api: ChunkApi, started: tuple[str, bytes]) -> None:
    upload_id, data = started
    before = await api.stored(upload_id)
    attempts: list[tuple[int, Any]] = [
        (0, chunk_of(data, 0)[:-1]),  # declared length too short: refused before reading
        (0, chunk_of(data, 0) + b"x"),  # declared length too long
        (4, chunk_of(data, 4) + b"x"),  # the last chunk is short
        (0, streamed(chunk_of(data, 0)[:-1])),  # unknown length, ends early
        (0, streamed(chunk_of(data, 0) + b"x")),  # unknown length, runs past the chunk
        (1, b"short duplicate"),  # a duplicate must have the right length too
    ]
    for n, body in attempts:
        status, answer = await api.put(upload_id, n, body)
        assert status == 400 and answer["code"] == "ERR_LENGTH_MISMATCH", (n, answer)
        assert await api.stored(upload_id) == before
    assert (await api.state(upload_id))["missing"] == [[0, 1], [2, 5]]


async def test_content_digest_is_checked_before_the_chunk_counts(
    api: ChunkApi, started: tuple[str, bytes]
) -> None:
    upload_id, data = started
    before = await api.stored(upload_id)
    chunk = chunk_of(data, 2)
    refused = [
        ({"Content-Digest": content_digest(b"something else")}, 422, "ERR_CHECKSUM_MISMATCH"),
        ({"Content-Digest": content_digest(chunk[:-1] + b"!")}, 422, "ERR_CHECKSUM_MISMATCH"),
        ({"Content-Digest": "sha-256=:bm90IGEgZGlnZXN0:"}, 400, "ERR_INVALID_HEADER"),
        ({"Content-Digest": "sha-256=not-a-byte-sequence"}, 400, "ERR_INVALID_HEADER"),
        ({"Content-Digest": "unixsum=:AAAA:"}, 400, "ERR_CHECKSUM_ALGORITHM"),
    ]
    for headers, expected_status, code in refused:
        status, answer = await api.put(upload_id, 2, chunk, headers)
        assert (status, answer["code"]) == (expected_status, code), headers
        assert await api.stored(upload_id) == before
    assert (await api.state(upload_id))["missing"] == [[0, 1], [2, 5]]
    status, _ = await api.put(upload_id, 2, chunk, {"Content-Digest": content_digest(chunk)})
    assert status == 200
    last = chunk_of(data, 4)
    sha512 = {"Content-Digest": content_digest(last, "sha-512")}
    status, _ = await api.put(upload_id, 4, last, sha512)
    assert status == 200
    assert (await api.state(upload_id))["missing"] == [[0, 1], [3, 4]]


async def test_an_interrupted_chunk_counts_for_nothing(
    api: ChunkApi, started: tuple[str, bytes]
) -> None:
    """A body cut short leaves the whole chunk missing (never half a chunk received), and
    the chunk can then be sent again in full."""
    upload_id, data = started
    before = await api.stored(upload_id)
    host, port = api.live.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    head = (
        f"PUT {UPLOADS}/{upload_id}/chunks/3 HTTP/1.1\r\nHost: {host}\r\n"
        f"Content-Length: {CHUNK}\r\nContent-Type: application/octet-stream\r\n\r\n"
    )
    writer.write(head.encode() + chunk_of(data, 3)[: CHUNK // 2])
    await writer.drain()
    await asyncio.sleep(0.2)  # let the server write what it got
    writer.transport.abort()
    for _ in range(100):  # the server notices the reset, then lets go of the chunk
        status, answer = await api.put(upload_id, 3, chunk_of(data, 3))
        if status != 423:
            break
        await asyncio.sleep(0.05)
    assert status == 200 and answer["duplicate"] is False
    del reader
    state, _ = await api.stored(upload_id)
    assert state["missing"] == [[0, 1], [2, 3], [4, 5]]
    assert before[0]["received_bytes"] + CHUNK == state["received_bytes"]


async def test_a_retried_chunk_takes_over_from_a_stalled_request(
    api: ChunkApi, started: tuple[str, bytes]
) -> None:
    """A client retrying a chunk whose first request hangs is not locked out by it."""
    upload_id, data = started
    release = asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield chunk_of(data, 0)[:1000]
        await release.wait()
        yield chunk_of(data, 0)[1000:]

    first = asyncio.ensure_future(api.put(upload_id, 0, slow_body()))
    await asyncio.sleep(0.3)
    status, answer = await api.put(upload_id, 0, chunk_of(data, 0))
    assert status == 200 and answer["duplicate"] is False, answer
    release.set()
    with pytest.raises(aiohttp.ClientError):
        await first  # its connection was closed under it
    assert (await api.put(upload_id, 0, chunk_of(data, 0)))[1]["duplicate"] is True


async def test_chunk_numbers_out_of_range(api: ChunkApi, started: tuple[str, bytes]) -> None:
    upload_id, _ = started
    before = await api.stored(upload_id)
    status, answer = await api.put(upload_id, 5, b"x")
    assert status == 416 and answer["code"] == "ERR_CHUNK_OUT_OF_RANGE"
    assert answer["chunk_count"] == 5
    for bad in ("-1", "abc", "1e3"):
        status, answer = await api.call(
            "PUT", CHUNK_PATH, f"{UPLOADS}/{upload_id}/chunks/{bad}", data=b"x"
        )
        assert status == 400, (bad, answer)
    assert await api.stored(upload_id) == before


async def test_a_form_encoded_chunk_is_refused(api: ChunkApi, started: tuple[str, bytes]) -> None:
    upload_id, data = started
    before = await api.stored(upload_id)
    status, answer = await api.put(
        upload_id, 0, chunk_of(data, 0), {"Content-Type": "multipart/form-data; boundary=x"}
    )
    assert status == 415 and answer["code"] == "ERR_UNSUPPORTED_MEDIA_TYPE"
    assert await api.stored(upload_id) == before


# completing ----------------------------------------------------------------------------


async def test_completing_with_chunks_missing_lists_them(
    api: ChunkApi, started: tuple[str, bytes]
) -> None:
    upload_id, data = started
    await api.put(upload_id, 3, chunk_of(data, 3))
    before = await api.stored(upload_id)
    status, answer = await api.complete(upload_id)
    assert status == 409 and answer["code"] == "ERR_UPLOAD_INCOMPLETE"
    assert answer["missing"] == [[0, 1], [2, 3], [4, 5]]  # half-open: chunks 0, 2 and 4
    assert await api.stored(upload_id) == before


async def test_completing_with_a_wrong_sha256_keeps_the_data(
    api: ChunkApi, started: tuple[str, bytes]
) -> None:
    upload_id, data = started
    for n in (0, 2, 3, 4):
        await api.put(upload_id, n, chunk_of(data, n))
    before = await api.stored(upload_id)
    right = hashlib.sha256(data).hexdigest()
    status, answer = await api.complete(upload_id, "0" * 64)
    assert status == 422 and answer["code"] == "ERR_CHECKSUM_MISMATCH"
    assert answer["sha256"] == right
    assert await api.stored(upload_id) == before
    status, done = await api.complete(upload_id, right.upper())
    assert status == 200 and done["sha256"] == right
    # Completing is idempotent, and still checks what it is told.
    assert await api.complete(upload_id) == (200, done)
    assert (await api.complete(upload_id, "1" * 64))[0] == 422


async def test_the_sha256_given_at_creation_is_checked(api: ChunkApi) -> None:
    data = os.urandom(CHUNK + 1)
    upload_id = (await api.create(len(data), chunk_size=CHUNK, sha256="ab" * 32))["id"]
    for n in (0, 1):
        await api.put(upload_id, n, chunk_of(data, n))
    status, answer = await api.complete(upload_id)
    assert status == 422 and answer["sha256"] == hashlib.sha256(data).hexdigest()
    assert (await api.state(upload_id))["state"] == "receiving"


async def test_an_empty_upload_completes_at_once(api: ChunkApi) -> None:
    created = await api.create(0)
    assert created["chunk_count"] == 0
    assert (await api.state(created["id"]))["missing"] == []
    assert (await api.put(created["id"], 0, b""))[0] == 416
    status, done = await api.complete(created["id"])
    assert status == 200 and done["sha256"] == hashlib.sha256(b"").hexdigest()


# listing, aborting, unknown and expired uploads ---------------------------------------------


async def test_list_shows_uploads_in_progress_of_every_protocol(
    api: ChunkApi, started: tuple[str, bytes]
) -> None:
    upload_id, _ = started
    tus_url = await api.live.create(100)
    finished = await api.create(0)
    await api.complete(finished["id"])
    status, listing = await api.call("GET", UPLOADS, UPLOADS)
    assert status == 200
    rows = {row["id"]: row for row in listing["uploads"]}
    assert set(rows) == {upload_id, tus_url.rsplit("/", 1)[1]}
    assert rows[upload_id]["received_bytes"] == CHUNK and rows[upload_id]["missing"]
    tus_row = rows[tus_url.rsplit("/", 1)[1]]
    assert tus_row["chunk_size"] is None and tus_row["missing"] is None
    assert tus_row["size"] == 100 and tus_row["percent"] == 0


async def test_abort_frees_the_space(api: ChunkApi, started: tuple[str, bytes]) -> None:
    upload_id, _ = started
    part = api.live.data_dir / "uploads" / f"{upload_id}.part"
    assert part.exists()
    assert await api.delete(upload_id) == (204, None)
    assert not part.exists()
    assert (await api.status(upload_id))[0] == 404
    assert (await api.delete(upload_id))[0] == 404


async def test_a_finished_upload_is_not_aborted(api: ChunkApi) -> None:
    upload_id = (await api.create(0))["id"]
    await api.complete(upload_id)
    status, answer = await api.delete(upload_id)
    assert status == 409 and answer["code"] == "ERR_UPLOAD_COMPLETED"
    assert (api.live.data_dir / "files" / upload_id).exists()


async def test_unknown_ids_are_404_everywhere(api: ChunkApi) -> None:
    unknown = "n0such-upload"
    answers = [
        await api.status(unknown),
        await api.put(unknown, 0, b"x"),
        await api.complete(unknown),
        await api.delete(unknown),
    ]
    for status, answer in answers:
        assert status == 404 and answer["code"] == "ERR_UPLOAD_NOT_FOUND"


async def test_expired_uploads_are_410(tmp_path: Path) -> None:
    async with live_server(tmp_path / "data", expire_after=0.3) as live:
        api = await _api(live)
        upload_id = (await api.create(CHUNK, chunk_size=CHUNK))["id"]
        await asyncio.sleep(0.4)
        answers = [
            await api.status(upload_id),
            await api.put(upload_id, 0, bytes(CHUNK)),
            await api.complete(upload_id),
            await api.delete(upload_id),
        ]
        for status, answer in answers:
            assert status == 410 and answer["code"] == "ERR_UPLOAD_EXPIRED"
        assert (await api.call("GET", UPLOADS, UPLOADS))[1]["uploads"] == []


async def test_tus_uploads_are_not_chunk_uploads(api: ChunkApi) -> None:
    tus_id = (await api.live.create(CHUNK)).rsplit("/", 1)[1]
    state = await api.state(tus_id)
    assert state["chunk_size"] is None and state["missing"] is None
    assert (await api.put(tus_id, 0, bytes(CHUNK)))[0] == 404
    assert (await api.complete(tus_id))[0] == 404


# the token and the metrics -----------------------------------------------------------------


async def test_everything_but_health_needs_the_token(tmp_path: Path) -> None:
    async with live_server(tmp_path / "data", token="s3cret") as live:
        for path in (UPLOADS, "/metrics", "/api/openapi.json", "/api/events"):
            async with live.http.get(live.url + path) as resp:
                assert resp.status == 401, path
        async with live.http.get(live.url + "/health") as resp:
            assert resp.status == 200
        auth = {"Authorization": "Bearer s3cret"}
        async with live.http.post(
            live.url + UPLOADS, json={"name": "a", "size": 1}, headers=auth
        ) as resp:
            assert resp.status == 201


async def test_metrics_count_uploads_chunks_and_bytes(
    api: ChunkApi, started: tuple[str, bytes]
) -> None:
    upload_id, data = started
    await api.put(upload_id, 1, chunk_of(data, 1))  # a duplicate
    await api.put(upload_id, 9, b"x")  # rejected
    for n in (0, 2, 3, 4):
        await api.put(upload_id, n, chunk_of(data, n))
    await api.complete(upload_id)
    await api.live.create(10)  # a tus upload in progress
    async with api.live.http.get(api.live.url + "/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
    samples = dict(
        line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#")
    )
    assert float(samples['freight_chunk_requests_total{outcome="stored"}']) == 5
    assert float(samples['freight_chunk_requests_total{outcome="duplicate"}']) == 1
    assert float(samples['freight_chunk_requests_total{outcome="rejected"}']) == 1
    assert float(samples["freight_chunk_body_bytes_total"]) == len(data) + CHUNK
    assert float(samples["freight_bytes_written_total"]) == len(data)
    assert float(samples["freight_uploads_created_total"]) == 2
    assert float(samples["freight_uploads_finished_total"]) == 1
    assert float(samples["freight_uploads_in_progress"]) == 1


async def test_apps_keep_separate_metrics(tmp_path: Path) -> None:
    async with (
        live_server(tmp_path / "a") as first,
        live_server(tmp_path / "b") as second,
    ):
        await first.create(5)
        await asyncio.sleep(0.05)  # the counting task follows the engine's events

        async def created(live: LiveServer, http: ClientSession) -> float:
            async with http.get(live.url + "/metrics") as resp:
                for line in (await resp.text()).splitlines():
                    if line.startswith("freight_uploads_created_total "):
                        return float(line.split()[1])
            raise AssertionError("no freight_uploads_created_total")

        assert await created(first, first.http) == 1
        assert await created(second, second.http) == 0
