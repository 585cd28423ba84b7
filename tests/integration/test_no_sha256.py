"""``freight serve --no-sha256``: no running hash, yet every upload and download still works.

A file then has a SHA-256 only when its client declared one, and that one is checked by
reading the file back when the upload finishes.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from tus_fixtures import OCTETS, TUS, live_server

MiB = 1024 * 1024


async def test_a_tus_upload_is_stored_and_served_without_a_digest(tmp_path: Path) -> None:
    data = os.urandom(6 * MiB + 3)
    async with live_server(tmp_path, sha256=False, fsync="never") as server:
        url = await server.create(len(data))
        resp = await server.patch(url, 0, data)
        assert resp.status == 204
        assert "Repr-Digest" not in resp.headers
        upload_id = url.rsplit("/", 1)[1]
        session = await server.engine.get(upload_id)
        assert session.is_finished and session.sha256 is None
        async with server.http.get(url) as got:
            assert got.status == 200 and await got.read() == data
            assert got.headers["ETag"] == f'"{upload_id}"'
            assert "Repr-Digest" not in got.headers
        headers = {"Range": "bytes=10-19", "If-Range": f'"{upload_id}"'}
        async with server.http.get(url, headers=headers) as part:
            assert part.status == 206 and await part.read() == data[10:20]


async def test_a_declared_sha256_is_still_checked(tmp_path: Path) -> None:
    data = os.urandom(3 * MiB)
    digest = hashlib.sha256(data).hexdigest()
    async with live_server(tmp_path, sha256=False, fsync="never") as server:
        for expected, status in (("ab" * 32, 422), (digest, 200)):
            async with server.http.post(
                f"{server.url}/api/uploads", json={"name": "a.bin", "size": len(data)}
            ) as resp:
                upload_id = (await resp.json())["id"]
            async with server.http.put(
                f"{server.url}/api/uploads/{upload_id}/chunks/0", data=data
            ) as resp:
                assert resp.status == 200
            async with server.http.post(
                f"{server.url}/api/uploads/{upload_id}/complete", json={"sha256": expected}
            ) as resp:
                reply = await resp.json()
                assert resp.status == status, reply
        assert reply["sha256"] == digest


async def test_a_patch_on_a_server_without_hashing_keeps_its_bytes_across_requests(
    tmp_path: Path,
) -> None:
    data = os.urandom(2 * MiB)
    async with live_server(tmp_path, sha256=False) as server:
        url = await server.create(len(data))
        for start in range(0, len(data), MiB // 2):
            headers = {**TUS, "Upload-Offset": str(start), "Content-Type": OCTETS}
            async with server.http.patch(
                url, data=data[start : start + MiB // 2], headers=headers
            ) as resp:
                assert resp.status == 204
        assert server.part_bytes(url) == data
