"""Disk space: declared lengths claim nothing on disk, caps on unfinished uploads, and a disk
that fills during an upload (a real ``freight serve`` on a small loop-mounted ext4)."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import aiohttp
import pytest
from helpers import MiB, PatternStream, download, patch_stream, request
from loopfs import fill, fill_up, loop_ext4

from freight.core import UploadEngine
from freight.errors import InsufficientStorage
from freight.storage.local import open_local
from tests.conftest import ServerProcess

TUS = {"Tus-Resumable": "1.0.0"}


@pytest.fixture
def small_ext4(tmp_path: Path) -> Iterator[Path]:
    with loop_ext4(tmp_path) as mount:
        yield mount


def post(
    url: str, headers: Mapping[str, str], *, source: str = "127.0.0.1", body: bytes = b""
) -> http.client.HTTPResponse:
    """POST from a chosen loopback address (a second client), answer read."""
    parts = url.split("/", 3)
    host, port = parts[2].rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30, source_address=(source, 0))
    conn.request("POST", "/" + parts[3], body=body, headers=dict(headers))
    resp = conn.getresponse()
    resp.read()
    conn.close()
    return resp


def create(server: ServerProcess, length: int, source: str = "127.0.0.1") -> tuple[int, str]:
    resp = post(f"{server.url}/files/", {**TUS, "Upload-Length": str(length)}, source=source)
    return resp.status, resp.getheader("Location") or ""


def server_log(server: ServerProcess) -> str:
    return "".join(server.output_tail)


# item: a declared length reserves nothing, one client cannot claim the disk -------------------


def test_declared_lengths_take_no_disk_and_one_client_cannot_claim_it_all(
    small_ext4: Path, server_factory: type[ServerProcess]
) -> None:
    server = server_factory(
        data_dir=small_ext4 / "data", args=["--disk-reserve", str(4 * MiB)]
    ).start()
    before = shutil.disk_usage(small_ext4).free
    usable = before - 4 * MiB
    # Under half of what is usable: accepted, and the disk does not lose it.
    status, _ = create(server, int(usable * 0.45))
    assert status == 201
    assert shutil.disk_usage(small_ext4).free > before - MiB
    # A second upload of this client would bring it past its share: refused, saying nothing
    # of how much is free.
    reply = request("POST", f"{server.url}/files/", {**TUS, "Upload-Length": str(usable // 5)})
    assert reply.status == 507
    error = json.loads(reply.body)
    assert error["code"] == "ERR_INSUFFICIENT_STORAGE" and "free" not in error
    assert str(before) not in error["message"] and str(usable) not in error["message"]
    # Another client still has room; what all unfinished uploads need stays within the disk.
    assert create(server, int(usable * 0.45), source="127.0.0.2")[0] == 201
    assert create(server, int(usable * 0.2), source="127.0.0.3")[0] == 507


def test_an_upload_never_written_expires_soon(
    tmp_path: Path, server_factory: type[ServerProcess]
) -> None:
    server = server_factory(
        data_dir=tmp_path / "data",
        args=["--expire-unstarted", "1", "--sweep-interval", "0.2"],
    ).start()
    status, unstarted = create(server, 10)
    started = create(server, 10)[1]
    assert status == 201
    assert patch_stream(f"{server.url}{started}", 0, [b"12345"], 5).status == 204
    deadline = time.monotonic() + 10
    while request("HEAD", f"{server.url}{unstarted}", TUS).status == 200:
        assert time.monotonic() < deadline, "a never-written upload outlived its short expiry"
        time.sleep(0.2)
    # Expired is refused at once; the sweeper deletes the part at its next round.
    part = tmp_path / "data" / "uploads"
    while list(part.glob(f"{unstarted.rsplit('/', 1)[1]}*")):
        assert time.monotonic() < deadline, "the expired upload's part was never swept"
        time.sleep(0.2)
    head = request("HEAD", f"{server.url}{started}", TUS)
    assert head.status == 200 and head.header("Upload-Offset") == "5"


# item: caps on unfinished uploads, in every HTTP protocol's form ---------------------------


def test_unfinished_uploads_are_capped_per_client_and_in_all(
    tmp_path: Path, server_factory: type[ServerProcess]
) -> None:
    server = server_factory(
        data_dir=tmp_path / "data",
        args=["--max-unfinished-per-client", "3", "--max-unfinished", "5"],
    ).start()
    assert [create(server, 10)[0] for _ in range(3)] == [201] * 3
    refused = post(f"{server.url}/files/", {**TUS, "Upload-Length": "10"})
    assert refused.status == 429
    assert refused.getheader("Tus-Resumable") == "1.0.0" and refused.getheader("Retry-After")
    chunks = request(
        "POST",
        f"{server.url}/api/uploads",
        {"Content-Type": "application/json"},
        b'{"size": 5, "name": "n"}',
    )
    assert chunks.status == 429 and json.loads(chunks.body)["code"] == "ERR_TOO_MANY_UPLOADS"
    ietf = request(
        "POST",
        f"{server.url}/files/",
        {"Upload-Draft-Interop-Version": "8", "Upload-Complete": "?0", "Upload-Length": "10"},
    )
    assert ietf.status == 429 and ietf.header("Upload-Draft-Interop-Version") == "8"
    # Other clients fill the server's total; then everyone waits.
    assert [create(server, 10, source="127.0.0.2")[0] for _ in range(3)] == [201, 201, 503]
    full = post(f"{server.url}/files/", {**TUS, "Upload-Length": "10"}, source="127.0.0.4")
    assert full.status == 503 and full.getheader("Retry-After")
    # A finished upload no longer counts.
    zero = post(f"{server.url}/files/", {**TUS, "Upload-Length": "0"}, source="127.0.0.5")
    assert zero.status == 503
    listing = json.loads(request("GET", f"{server.url}/api/uploads").body)
    assert len(listing["uploads"]) == 5


def test_clients_behind_a_trusted_proxy_are_capped_one_by_one(
    tmp_path: Path, server_factory: type[ServerProcess]
) -> None:
    """Behind a proxy every client has the proxy's address: with --trusted-proxy the caps
    count the address X-Forwarded-For names; without it, a forged header changes nothing.
    WebSocket uploads count against the same cap."""
    args = ["--max-unfinished-per-client", "2", "--trusted-proxy", "127.0.0.2/32"]
    server = server_factory(data_dir=tmp_path / "data", args=args).start()

    def via_proxy(client: str) -> int:
        headers = {**TUS, "Upload-Length": "10", "X-Forwarded-For": client}
        return post(f"{server.url}/files/", headers, source="127.0.0.2").status

    assert [via_proxy("198.51.100.7") for _ in range(3)] == [201, 201, 429]
    assert via_proxy("198.51.100.8") == 201  # another client behind the same proxy
    forged = {**TUS, "Upload-Length": "10", "X-Forwarded-For": "198.51.100.9"}
    assert [post(f"{server.url}/files/", forged).status for _ in range(3)] == [201, 201, 429]

    async def ws_start() -> dict[str, object]:
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(f"{server.url}/api/ws", headers={"Origin": server.url}) as ws,
        ):
            await ws.send_json({"op": "start", "name": "w.bin", "size": 10})
            reply: dict[str, object] = await ws.receive_json(timeout=10)
            return reply

    refused = asyncio.run(ws_start())  # 127.0.0.1 already holds its two
    assert refused.get("code") == "ERR_TOO_MANY_UPLOADS", refused


# item: listings come a page at a time ------------------------------------------------------


def test_listings_are_paged_and_the_cli_follows_the_cursor(
    tmp_path: Path, server_factory: type[ServerProcess]
) -> None:
    server = server_factory(data_dir=tmp_path / "data").start()
    files = {create(server, 0)[1].rsplit("/", 1)[1] for _ in range(120)}  # finished at once
    uploads = {create(server, 10)[1].rsplit("/", 1)[1] for _ in range(105)}
    for path, key, expected in (("api/files", "files", files), ("api/uploads", "uploads", uploads)):
        first = json.loads(request("GET", f"{server.url}/{path}").body)
        assert len(first[key]) == 100 and first["next_cursor"]
        seen: list[str] = []
        cursor: str | None = None
        while True:
            query = f"?limit=40&cursor={cursor}" if cursor else "?limit=40"
            page = json.loads(request("GET", f"{server.url}/{path}{query}").body)
            assert len(page[key]) <= 40
            seen += [entry["id"] for entry in page[key]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert len(seen) == len(set(seen)) and set(seen) == expected
    assert request("GET", f"{server.url}/api/files?limit=0").status == 400
    assert request("GET", f"{server.url}/api/files?cursor=%%%").status == 400
    done = subprocess.run(
        [*_freight(), "ls", server.url, "--json"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert {entry["id"] for entry in json.loads(done.stdout)["files"]} == files


def _freight() -> list[str]:
    import sys

    return [sys.executable, "-m", "freight"]


# item: the disk fills during an upload -------------------------------------------------------


def test_a_disk_filling_mid_upload_is_507_and_the_offset_is_what_is_recorded(
    small_ext4: Path, server_factory: type[ServerProcess]
) -> None:
    data = small_ext4 / "data"
    server = server_factory(
        data_dir=data, args=["--disk-reserve", "0", "--sweep-interval", "0.5"]
    ).start()
    stream = PatternStream(24 * MiB, seed=7)
    status, location = create(server, stream.size)
    assert status == 201
    url = f"{server.url}{location}"
    filler = small_ext4 / "filler"
    fill(filler, 10 * MiB)
    reply = patch_stream(url, 0, stream.chunks(), stream.size)
    assert reply.status == 507, reply.body
    assert reply.header("Tus-Resumable") == "1.0.0"
    assert json.loads(reply.body)["code"] == "ERR_INSUFFICIENT_STORAGE"
    head = request("HEAD", url, TUS)
    offset = int(head.header("Upload-Offset") or "-1")
    assert 0 <= offset < stream.size, "the offset must be what was recorded, never the length"
    part = data / "uploads" / f"{location.rsplit('/', 1)[1]}.part"
    with part.open("rb") as file:
        assert file.read(offset) == b"".join(stream.chunks(0, offset))
    # Room again: the client goes on from the recorded offset and the file is finished.
    filler.unlink()
    reply = patch_stream(url, offset, stream.chunks(offset), stream.size - offset)
    assert reply.status == 204, reply.body
    assert download(url).sha256 == stream.sha256()
    log = server_log(server)
    assert "Traceback" not in log and "never retrieved" not in log, log


def test_chunk_api_answers_507_when_the_disk_fills(
    small_ext4: Path, server_factory: type[ServerProcess]
) -> None:
    server = server_factory(data_dir=small_ext4 / "data", args=["--disk-reserve", "0"]).start()
    body = json.dumps({"size": 16 * MiB, "chunk_size": 8 * MiB, "name": "x"}).encode()
    created = request("POST", f"{server.url}/api/uploads", {}, body)
    assert created.status == 201, created.body
    upload = json.loads(created.body)
    fill(small_ext4 / "filler", 4 * MiB)
    chunk = request(
        "PUT",
        f"{server.url}{upload['upload_url']}/chunks/0",
        {"Content-Type": "application/octet-stream"},
        os.urandom(8 * MiB),
    )
    assert chunk.status == 507 and json.loads(chunk.body)["code"] == "ERR_INSUFFICIENT_STORAGE"
    state = json.loads(request("GET", f"{server.url}{upload['upload_url']}").body)
    # What reached the disk before it filled is kept, as for any cut request; the chunk is
    # not received, and a client sends the rest once there is room.
    kept = state["received_bytes"]
    assert 0 <= kept < 8 * MiB
    assert state["missing"][0][0] == 0  # chunk 0 still counts as missing
    if kept:
        assert state["missing_bytes"][0] == [kept, 8 * MiB]  # from the kept end on
    assert "Traceback" not in server_log(server)


# the metadata store always has room to record ----------------------------------------------


async def test_the_metadata_store_records_on_a_full_disk_and_then_says_507(
    small_ext4: Path,
) -> None:
    from freight.core.session import UploadSession, new_upload_id

    backend = open_local(small_ext4 / "data")
    sessions = backend.sessions
    session = UploadSession(id="a" * 32, length=100, metadata={}, created=1.0, expires=None)
    await sessions.create(session)
    fill_up(small_ext4 / "filler")
    # The reserve is given to SQLite: this still fits.
    await sessions.record_received(session.id, 0, 50, expires=None)
    assert (await sessions.load(session.id)).offset == 50
    big = {"note": "x" * 60_000}
    with pytest.raises(InsufficientStorage):  # once it is spent: 507, never a bare 500
        for _ in range(2000):
            other = UploadSession(
                id=new_upload_id(), length=1, metadata={**big}, created=2.0, expires=None
            )
            await sessions.create(other)
    await backend.close()


async def test_progress_counts_in_memory_only_once_recorded(small_ext4: Path) -> None:
    engine = UploadEngine(open_local(small_ext4 / "data", metadata_reserve=0))
    session = await engine.create(length=2 * MiB, metadata={})
    try:
        async with engine.writer(session.id, 0) as writer:
            await writer.write(os.urandom(MiB))
            await writer.settle()
            fill_up(small_ext4 / "filler")
            with pytest.raises(InsufficientStorage):
                for number in range(2000):  # use up whatever room SQLite's files still have
                    other = await engine.create(length=1, metadata={"n": "y" * 2000 + str(number)})
                    assert other
            with pytest.raises(InsufficientStorage):
                await writer.commit()
        stored = await engine.sessions.load(session.id)
        assert (await engine.get(session.id)).offset == stored.offset == 0
    finally:
        await engine.close()
