"""Signed download links open one file, for a while, without the bearer token."""

from __future__ import annotations

import os
import time
from pathlib import Path

from tus_fixtures import TUS, live_server

from freight.server.links import signature

TOKEN = "s3cret"


async def test_a_signed_link_opens_one_file_until_it_expires(tmp_path: Path) -> None:
    async with live_server(tmp_path / "data", token=TOKEN) as server:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        data = os.urandom(5000)
        async with server.http.post(
            f"{server.url}/files/",
            data=data,
            headers={
                **TUS,
                **auth,
                "Upload-Length": str(len(data)),
                "Content-Type": "application/offset+octet-stream",
            },
        ) as resp:
            assert resp.status == 201
            file_url = server.absolute(resp.headers["Location"])
        upload_id = file_url.rsplit("/", 1)[1]

        async with server.http.get(file_url) as resp:
            assert resp.status == 401
        async with server.http.post(f"{server.url}/api/files/{upload_id}/link") as resp:
            assert resp.status == 401
        async with server.http.post(
            f"{server.url}/api/files/{upload_id}/link", headers=auth
        ) as resp:
            link = await resp.json()
        assert link["expires"] > time.time()
        async with server.http.get(f"{server.url}{link['url']}") as resp:
            assert resp.status == 200
            assert await resp.read() == data
        async with server.http.get(
            f"{server.url}{link['url']}", headers={"Range": "bytes=0-9"}
        ) as resp:
            assert resp.status == 206
            assert await resp.read() == data[:10]

        query = link["url"].split("?", 1)[1]
        async with server.http.delete(f"{server.url}/api/files/{upload_id}?{query}") as resp:
            assert resp.status == 401  # a link opens downloads only
        async with server.http.get(f"{server.url}/api/files?{query}") as resp:
            assert resp.status == 401
        expired = int(time.time()) - 1
        stale = f"expires={expired}&sig={signature(TOKEN, upload_id, expired)}"
        async with server.http.get(f"{file_url}?{stale}") as resp:
            assert resp.status == 401
        forged = f"expires={int(time.time()) + 60}&sig={'0' * 64}"
        async with server.http.get(f"{file_url}?{forged}") as resp:
            assert resp.status == 401
