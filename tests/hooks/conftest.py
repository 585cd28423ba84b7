"""Fixtures of the hook tests: a webhook receiver, and a freight app in this process."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from freight.config import ServerConfig
from freight.core import UploadEngine
from freight.server.app import create_app
from freight.server.state import ENGINE
from tests.hooks.receiver import SECRET, Receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    started = Receiver().start()
    yield started
    started.close()


class LiveApp:
    def __init__(self, url: str, engine: UploadEngine, http: aiohttp.ClientSession) -> None:
        self.url = url
        self.engine = engine
        self.http = http


@pytest.fixture
async def start_app(tmp_path: Path) -> AsyncIterator[Any]:
    """``await start_app(**config)``: freight in this process (closed after the test)."""
    servers: list[TestServer] = []
    async with aiohttp.ClientSession() as http:

        async def start(**config: Any) -> LiveApp:
            config.setdefault("hook_secret", SECRET)
            config.setdefault("hook_timeout", 5.0)
            app = create_app(ServerConfig(data_dir=tmp_path / f"data{len(servers)}", **config))
            server = TestServer(app, host="127.0.0.1")
            await server.start_server()
            servers.append(server)
            return LiveApp(str(server.make_url("")).rstrip("/"), app[ENGINE], http)

        yield start
        for server in servers:
            await server.close()
