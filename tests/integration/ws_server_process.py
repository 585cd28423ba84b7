"""``freight serve`` with WebSocket settings the CLI does not expose, for tests that measure
the server process on its own (its RSS) with short timeouts.

Usage: ``python ws_server_process.py DATA_DIR TOKEN SETTINGS_JSON``; TOKEN may be empty.
Prints ``freight listening on http://127.0.0.1:PORT`` like ``freight serve``.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from aiohttp import web

from freight.config import ServerConfig
from freight.server.app import READ_BUFSIZE, create_app
from freight.server.ws import WS_SETTINGS, WsSettings


async def serve(data_dir: Path, token: str | None, settings: WsSettings) -> None:
    app = create_app(ServerConfig(data_dir=data_dir, token=token))
    app[WS_SETTINGS] = settings
    runner = web.AppRunner(app, access_log=None, read_bufsize=READ_BUFSIZE)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    print(f"freight listening on http://127.0.0.1:{port} (data in {data_dir})", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    directory, token, options = sys.argv[1:4]
    asyncio.run(serve(Path(directory), token or None, WsSettings(**json.loads(options))))
