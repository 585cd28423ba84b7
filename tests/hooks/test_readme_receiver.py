"""The README's webhook receiver, run as written against a real server: it verifies the
signature freight sends and its refusal reaches the client."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.hooks.test_webhook import tus_create

README = Path(__file__).parents[2] / "README.md"


def readme_receiver(secret: str) -> Any:
    section = README.read_text().split("## In an application (hooks)", 1)[1].split("\n## ")[0]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code, "the hooks section has no Python example"
    source = code.group(1).replace('SECRET = b"..."', f"SECRET = {secret.encode()!r}")
    source = "\n".join(line for line in source.splitlines() if not line.startswith("web.run_app"))
    namespace: dict[str, Any] = {}
    exec(compile(source, "README.md", "exec"), namespace)
    return namespace["hook"]


async def test_the_readme_receiver_verifies_and_refuses(start_app: Any) -> None:
    app = web.Application()
    app.router.add_post("/freight-hook", readme_receiver("shared"))
    receiver = TestServer(app, host="127.0.0.1")
    await receiver.start_server()
    try:
        url = str(receiver.make_url("/freight-hook"))
        signed = await start_app(hook_url=url, hook_secret="shared")
        assert (await tus_create(signed, "setup.exe", 10)).status == 403
        assert (await tus_create(signed, "notes.txt", 10)).status == 201
        forged = await start_app(hook_url=url, hook_secret="guessed")
        assert (await tus_create(forged, "notes.txt", 10)).status == 503  # 401: refused
    finally:
        await receiver.close()
