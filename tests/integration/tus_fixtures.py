"""An in-process freight server on a loopback socket, and helpers to poke its tus API."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from aiohttp import ClientResponse, ClientSession
from aiohttp.test_utils import TestServer

from freight.config import ServerConfig
from freight.core import UploadEngine
from freight.server.app import create_app
from freight.server.state import ENGINE

TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = "application/offset+octet-stream"


@dataclass
class LiveServer:
    url: str
    config: ServerConfig
    http: ClientSession
    engine: UploadEngine

    @property
    def data_dir(self) -> Path:
        return self.config.data_dir

    def absolute(self, location: str) -> str:
        return location if location.startswith("http") else f"{self.url}{location}"

    async def create(
        self, length: int | None, headers: Mapping[str, str] | None = None, **kwargs: object
    ) -> str:
        sent = {**TUS, **(headers or {})}
        if length is not None:
            sent["Upload-Length"] = str(length)
        async with self.http.post(f"{self.url}/files/", headers=sent, **kwargs) as resp:  # type: ignore[arg-type]
            assert resp.status == 201, await resp.text()
            return self.absolute(resp.headers["Location"])

    async def patch(
        self, url: str, offset: int, body: bytes, headers: Mapping[str, str] | None = None
    ) -> ClientResponse:
        sent = {**TUS, "Upload-Offset": str(offset), "Content-Type": OCTETS, **(headers or {})}
        async with self.http.patch(url, data=body, headers=sent) as resp:
            await resp.read()
            return resp

    async def head(self, url: str) -> ClientResponse:
        async with self.http.head(url, headers=TUS) as resp:
            return resp

    async def offset(self, url: str) -> int:
        resp = await self.head(url)
        assert resp.status == 200, resp.status
        return int(resp.headers["Upload-Offset"])

    def part_bytes(self, url: str) -> bytes:
        with open_stored(self.data_dir, url.rsplit("/", 1)[1]) as file:
            return file.read()

    async def snapshot(self, url: str) -> tuple[int, str]:
        """What the server holds: its offset and the hash of the bytes up to it."""
        offset = await self.offset(url)
        return offset, hashlib.sha256(self.part_bytes(url)[:offset]).hexdigest()


@asynccontextmanager
async def live_server(data_dir: Path, **settings: object) -> AsyncIterator[LiveServer]:
    config = ServerConfig(data_dir=data_dir, **settings)  # type: ignore[arg-type]
    server = TestServer(create_app(config), host="127.0.0.1")
    await server.start_server()
    try:
        async with ClientSession() as http:
            url = str(server.make_url("")).rstrip("/")
            yield LiveServer(url, config, http, server.app[ENGINE])
    finally:
        await server.close()


def metadata(**values: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in values.items())


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def open_stored(data_dir: Path, upload_id: str) -> BinaryIO:
    """An upload's bytes: its part file, or the finished file that a finish (which may run
    after the final request's answer) has just renamed it to."""
    try:
        return (data_dir / "uploads" / f"{upload_id}.part").open("rb")
    except FileNotFoundError:
        return (data_dir / "files" / upload_id).open("rb")
