"""The tus 1.0.0 server: every extension, and every error status with the stored bytes
checked unchanged after each rejected request."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from tus_fixtures import OCTETS, TUS, LiveServer, b64, live_server, metadata

from freight.config import FsyncPolicy

EXTENSIONS = {
    "creation",
    "creation-with-upload",
    "creation-defer-length",
    "expiration",
    "checksum",
    "termination",
    "concatenation",
    "concatenation-unfinished",
}


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[LiveServer]:
    async with live_server(tmp_path / "data", max_size=64 * 1024 * 1024) as live:
        yield live


@pytest.fixture
async def started(server: LiveServer) -> tuple[str, bytes]:
    """An upload of 3 MiB with its first 1 MiB stored."""
    data = os.urandom(3 * 1024 * 1024)
    url = await server.create(len(data))
    resp = await server.patch(url, 0, data[: 1024 * 1024])
    assert resp.status == 204
    return url, data


async def test_options_advertises_exactly_what_is_implemented(server: LiveServer) -> None:
    async with server.http.options(f"{server.url}/files/") as resp:
        assert resp.status == 204
        assert resp.headers["Tus-Version"] == "1.0.0"
        assert resp.headers["Tus-Resumable"] == "1.0.0"
        assert set(resp.headers["Tus-Extension"].split(",")) == EXTENSIONS
        assert resp.headers["Tus-Max-Size"] == str(64 * 1024 * 1024)
        assert {"sha1", "sha256", "md5"} <= set(resp.headers["Tus-Checksum-Algorithm"].split(","))


async def test_upload_in_pieces_then_download(server: LiveServer) -> None:
    data = os.urandom(5 * 1024 * 1024 + 17)
    url = await server.create(len(data), {"Upload-Metadata": metadata(filename="a.bin")})
    half = len(data) // 2
    first = await server.patch(url, 0, data[:half])
    assert first.status == 204
    assert first.headers["Upload-Offset"] == str(half)
    assert "Upload-Expires" in first.headers
    last = await server.patch(url, half, data[half:], {"Want-Repr-Digest": "sha-256=10"})
    assert last.status == 204
    assert last.headers["Upload-Offset"] == str(len(data))
    assert last.headers["Repr-Digest"] == f"sha-256=:{b64(hashlib.sha256(data).digest())}:"
    async with server.http.get(url) as resp:
        assert resp.status == 200
        assert await resp.read() == data


async def test_head_reports_length_metadata_and_no_store(server: LiveServer) -> None:
    url = await server.create(10, {"Upload-Metadata": metadata(filename="x.txt", kind="t")})
    resp = await server.head(url)
    assert resp.status == 200
    assert resp.headers["Upload-Offset"] == "0"
    assert resp.headers["Upload-Length"] == "10"
    assert resp.headers["Cache-Control"] == "no-store"
    assert "filename " + b64(b"x.txt") in resp.headers["Upload-Metadata"]


async def test_creation_with_upload(server: LiveServer) -> None:
    data = os.urandom(300_000)
    headers = {**TUS, "Upload-Length": str(len(data)), "Content-Type": OCTETS}
    async with server.http.post(f"{server.url}/files/", data=data, headers=headers) as resp:
        assert resp.status == 201
        assert resp.headers["Upload-Offset"] == str(len(data))
        url = server.absolute(resp.headers["Location"])
    async with server.http.get(url) as resp:
        assert await resp.read() == data


async def test_deferred_length(server: LiveServer) -> None:
    url = await server.create(None, {"Upload-Defer-Length": "1"})
    assert (await server.head(url)).headers["Upload-Defer-Length"] == "1"
    assert (await server.patch(url, 0, b"abc")).status == 204
    resp = await server.patch(url, 3, b"def", {"Upload-Length": "6", "Want-Repr-Digest": "a=1"})
    assert resp.status == 204
    assert "Repr-Digest" in resp.headers
    async with server.http.get(url) as resp:
        assert await resp.read() == b"abcdef"


async def test_zero_length_upload_finishes_at_creation(server: LiveServer) -> None:
    url = await server.create(0)
    async with server.http.get(url) as resp:
        assert resp.status == 200
        assert await resp.read() == b""


async def test_checksum_accepted(server: LiveServer) -> None:
    data = os.urandom(100_000)
    url = await server.create(len(data))
    for algo in ("sha1", "sha256", "md5"):
        url = await server.create(len(data))
        digest = hashlib.new(algo, data).digest()
        resp = await server.patch(url, 0, data, {"Upload-Checksum": f"{algo} {b64(digest)}"})
        assert resp.status == 204, algo


async def test_termination(server: LiveServer, started: tuple[str, bytes]) -> None:
    url, _ = started
    async with server.http.delete(url, headers=TUS) as resp:
        assert resp.status == 204
    assert (await server.head(url)).status == 404
    assert not list((server.data_dir / "uploads").iterdir())


async def test_method_override(server: LiveServer, started: tuple[str, bytes]) -> None:
    url, data = started
    headers = {
        **TUS,
        "X-HTTP-Method-Override": "PATCH",
        "Upload-Offset": str(1024 * 1024),
        "Content-Type": OCTETS,
    }
    async with server.http.post(url, data=data[1024 * 1024 :], headers=headers) as resp:
        assert resp.status == 204
        assert resp.headers["Upload-Offset"] == str(len(data))


async def test_cors_preflight_allows_tus_headers(tmp_path: Path) -> None:
    headers = {
        "Origin": "http://example.test",
        "Access-Control-Request-Method": "PATCH",
        "Access-Control-Request-Headers": "upload-offset,tus-resumable",
    }
    allowed_origin = {"cors_origins": ("http://example.test",)}
    async with live_server(tmp_path / "data", **allowed_origin) as server:
        async with server.http.options(f"{server.url}/files/x", headers=headers) as resp:
            assert resp.status == 204
            assert resp.headers["Access-Control-Allow-Origin"] == "http://example.test"
            allowed = resp.headers["Access-Control-Allow-Headers"].lower()
            assert "upload-offset" in allowed
            assert "tus-resumable" in allowed
        async with server.http.head(
            f"{server.url}/files/x", headers={**TUS, "Origin": "http://example.test"}
        ) as resp:
            assert "Upload-Offset" in resp.headers["Access-Control-Expose-Headers"]


# --- concatenation ---------------------------------------------------------------------------


async def test_concatenation_of_finished_parts(server: LiveServer) -> None:
    pieces = [os.urandom(n) for n in (1_000_000, 7, 2_500_000)]
    parts = []
    for piece in pieces:
        url = await server.create(len(piece), {"Upload-Concat": "partial"})
        assert (await server.patch(url, 0, piece)).status == 204
        assert (await server.head(url)).headers["Upload-Concat"] == "partial"
        parts.append(url)
    paths = " ".join(p.removeprefix(server.url) for p in parts)
    final = await server.create(None, {"Upload-Concat": f"final;{paths}"})
    head = await server.head(final)
    assert head.headers["Upload-Length"] == str(sum(map(len, pieces)))
    assert head.headers["Upload-Concat"].startswith("final;")
    async with server.http.get(final) as resp:
        assert await resp.read() == b"".join(pieces)
    assert (await server.patch(final, 0, b"x")).status == 403


async def test_concatenation_unfinished(server: LiveServer) -> None:
    pieces = [os.urandom(200_000), os.urandom(300_000)]
    parts = [await server.create(len(p), {"Upload-Concat": "partial"}) for p in pieces]
    paths = " ".join(p.removeprefix(server.url) for p in parts)
    final = await server.create(None, {"Upload-Concat": f"final;{paths}"})
    head = await server.head(final)
    assert "Upload-Offset" not in head.headers  # not assembled yet
    for url, piece in zip(parts, pieces, strict=True):
        assert (await server.patch(url, 0, piece)).status == 204
    for _ in range(100):
        head = await server.head(final)
        if "Upload-Offset" in head.headers:
            break
        await asyncio.sleep(0.05)
    assert head.headers["Upload-Offset"] == str(500_000)
    async with server.http.get(final) as resp:
        assert await resp.read() == b"".join(pieces)


# --- every error status, with the stored bytes unchanged -------------------------------------


async def rejected(
    server: LiveServer, url: str, status: int, offset: int, body: bytes, headers: dict[str, str]
) -> dict[str, str]:
    before = await server.snapshot(url)
    sent = {**TUS, "Upload-Offset": str(offset), "Content-Type": OCTETS, **headers}
    sent = {k: v for k, v in sent.items() if v != ""}
    async with server.http.patch(url, data=body, headers=sent) as resp:
        assert resp.status == status, await resp.text()
        answer = dict(resp.headers)
        error = await resp.json(content_type=None)
    assert error["code"].startswith("ERR_")
    assert error["message"]
    assert await server.snapshot(url) == before
    return answer


async def test_412_wrong_tus_version(server: LiveServer, started: tuple[str, bytes]) -> None:
    url, data = started
    answer = await rejected(server, url, 412, 1 << 20, data[:10], {"Tus-Resumable": "0.2.2"})
    assert answer["Tus-Version"] == "1.0.0"
    await rejected(server, url, 412, 1 << 20, data[:10], {"Tus-Resumable": ""})
    async with server.http.post(f"{server.url}/files/", headers={"Upload-Length": "5"}) as resp:
        assert resp.status == 412


async def test_415_wrong_content_type(server: LiveServer, started: tuple[str, bytes]) -> None:
    url, data = started
    await rejected(server, url, 415, 1 << 20, data[1 << 20 :], {"Content-Type": "text/plain"})


async def test_409_offset_mismatch(server: LiveServer, started: tuple[str, bytes]) -> None:
    url, data = started
    answer = await rejected(server, url, 409, 5, b"overwrite!", {})
    assert answer["Upload-Offset"] == str(1 << 20)
    await rejected(server, url, 409, 2 << 20, data[2 << 20 :], {})


async def test_404_unknown_upload(server: LiveServer) -> None:
    for path in ("nosuchupload", "..%2F..%2Fetc", "a" * 300):
        async with server.http.head(f"{server.url}/files/{path}", headers=TUS) as resp:
            assert resp.status == 404
        async with server.http.patch(
            f"{server.url}/files/{path}",
            data=b"x",
            headers={**TUS, "Upload-Offset": "0", "Content-Type": OCTETS},
        ) as resp:
            assert resp.status == 404


async def test_410_expired_then_swept(tmp_path: Path) -> None:
    async with live_server(tmp_path / "data", expire_after=0.3) as server:
        url = await server.create(100)
        assert (await server.patch(url, 0, b"x" * 10)).status == 204
        await asyncio.sleep(0.5)
        assert (await server.head(url)).status == 410
        async with server.http.patch(
            url, data=b"y", headers={**TUS, "Upload-Offset": "10", "Content-Type": OCTETS}
        ) as resp:
            assert resp.status == 410
        assert list((server.data_dir / "uploads").iterdir())
        assert await server.engine.sweep_expired() == 1
        assert (await server.head(url)).status == 404
        assert not list((server.data_dir / "uploads").iterdir())


async def test_413_too_large(server: LiveServer, started: tuple[str, bytes]) -> None:
    async with server.http.post(
        f"{server.url}/files/", headers={**TUS, "Upload-Length": str(65 * 1024 * 1024)}
    ) as resp:
        assert resp.status == 413
    url, data = started
    await rejected(server, url, 413, 1 << 20, data[1 << 20 :] + b"extra", {})


async def test_460_checksum_mismatch_appends_nothing(
    server: LiveServer, started: tuple[str, bytes]
) -> None:
    url, data = started
    body = data[1 << 20 : 2 << 20]
    wrong = b64(hashlib.sha1(b"not the body").digest())
    await rejected(server, url, 460, 1 << 20, body, {"Upload-Checksum": f"sha1 {wrong}"})
    right = b64(hashlib.sha1(body).digest())
    assert (
        await server.patch(url, 1 << 20, body, {"Upload-Checksum": f"sha1 {right}"})
    ).status == 204
    assert (await server.patch(url, 2 << 20, data[2 << 20 :])).status == 204
    async with server.http.get(url) as resp:
        assert hashlib.sha256(await resp.read()).digest() == hashlib.sha256(data).digest()
    assert (await server.head(url)).headers["Repr-Digest"] == (
        f"sha-256=:{b64(hashlib.sha256(data).digest())}:"
    )


async def test_400_bad_headers(server: LiveServer, started: tuple[str, bytes]) -> None:
    url, data = started
    body = data[1 << 20 : 2 << 20]
    await rejected(server, url, 400, 1 << 20, body, {"Upload-Checksum": "crc99 AAAA"})
    await rejected(server, url, 400, 1 << 20, body, {"Upload-Checksum": "sha1 !!!"})
    await rejected(server, url, 400, 1 << 20, body, {"Upload-Offset": "abc"})
    await rejected(server, url, 400, 1 << 20, body, {"Upload-Offset": "-1"})
    for bad in (
        {"Upload-Length": "-5"},
        {"Upload-Length": "12abc"},
        {"Upload-Length": "5", "Upload-Defer-Length": "1"},
        {"Upload-Defer-Length": "2"},
        {"Upload-Length": "5", "Upload-Metadata": "filename not*base64"},
        {"Upload-Concat": "final;http://elsewhere.test/nothing/here"},
        {"Upload-Concat": "whatever"},
        {},
    ):
        async with server.http.post(f"{server.url}/files/", headers={**TUS, **bad}) as resp:
            assert resp.status == 400, (bad, resp.status)
            assert (await resp.json())["message"]


async def test_a_concurrent_patch_takes_the_upload_over(
    server: LiveServer, started: tuple[str, bytes]
) -> None:
    """Like tusd: the newer request ends the older one. It is served from the offset it
    names (what its client last heard): the older one records nothing from there on."""
    url, data = started
    gate = asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield data[1 << 20 : (1 << 20) + 65536]
        await gate.wait()
        yield data[(1 << 20) + 65536 : 2 << 20]

    headers = {**TUS, "Upload-Offset": str(1 << 20), "Content-Type": OCTETS}
    first = asyncio.ensure_future(server.http.patch(url, data=slow_body(), headers=headers))
    await asyncio.sleep(0.3)
    resp = await server.patch(url, 1 << 20, data[1 << 20 : 2 << 20])
    assert resp.status == 204
    assert resp.headers["Upload-Offset"] == str(2 << 20)
    gate.set()
    with pytest.raises(aiohttp.ClientError):
        await first  # its connection was closed under it
    assert server.part_bytes(url)[: 2 << 20] == data[: 2 << 20]
    stale = await server.patch(url, 1 << 20, b"zz")  # a request behind the upload's offset
    assert stale.status == 409 and stale.headers["Upload-Offset"] == str(2 << 20)


async def test_401_without_token(tmp_path: Path) -> None:
    async with live_server(tmp_path / "data", token="s3cret") as server:
        async with server.http.post(
            f"{server.url}/files/", headers={**TUS, "Upload-Length": "1"}
        ) as resp:
            assert resp.status == 401
        async with server.http.post(
            f"{server.url}/files/",
            headers={**TUS, "Upload-Length": "1", "Authorization": "Bearer wrong"},
        ) as resp:
            assert resp.status == 401
        async with server.http.get(f"{server.url}/health") as resp:
            assert resp.status == 200
        async with server.http.post(
            f"{server.url}/files/",
            headers={**TUS, "Upload-Length": "1", "Authorization": "Bearer s3cret"},
        ) as resp:
            assert resp.status == 201
        assert (server.data_dir / "freight.db").exists()


async def test_507_declared_length_beyond_free_space(server: LiveServer) -> None:
    async with (
        live_server(server.data_dir.parent / "other") as big,
        big.http.post(f"{big.url}/files/", headers={**TUS, "Upload-Length": str(1 << 60)}) as resp,
    ):
        assert resp.status == 507
        assert (await resp.json())["code"] == "ERR_INSUFFICIENT_STORAGE"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


async def test_507_disk_full_mid_upload_keeps_stored_bytes(small_disk: Path) -> None:
    async with live_server(small_disk / "data", disk_reserve=0, fsync=FsyncPolicy.NEVER) as server:
        url = await server.create(None, {"Upload-Defer-Length": "1"})
        first = os.urandom(1 << 20)
        assert (await server.patch(url, 0, first)).status == 204
        before = await server.snapshot(url)
        resp = await server.patch(url, 1 << 20, os.urandom(12 << 20))
        assert resp.status == 507
        after = await server.snapshot(url)
        assert after[0] >= before[0]
        assert server.part_bytes(url)[: 1 << 20] == first
