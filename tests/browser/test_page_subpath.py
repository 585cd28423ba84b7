"""The page served by ``freight serve --base-path /sub/`` through a real nginx at ``/sub/``.

The page must load its scripts and styles and reach its API, live events and WebSocket under
the prefix: every request it makes stays under ``/sub/`` (before, its absolute
``/static/app.js`` was a 404 at the proxy and the page never started).
"""

from __future__ import annotations

import hashlib
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import pytest
from reverse_proxy import NginxProxy, nginx_proxy

MiB = 1024 * 1024

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def proxy(server_factory: Any, tmp_path: Path) -> Iterator[NginxProxy]:
    server = server_factory(data_dir=tmp_path / "data", args=["--base-path", "/sub/"]).start()
    with nginx_proxy(tmp_path / "nginx", server.port, "/sub/") as started:
        yield started


def downloaded_sha256(url: str) -> str:
    digest = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=60) as reply:
        while block := reply.read(MiB):
            digest.update(block)
    return digest.hexdigest()


def test_the_page_uploads_with_chunks_and_websocket_under_the_prefix(
    proxy: NginxProxy, browser_page: Callable[..., Any], random_file: Callable[..., Any]
) -> None:
    requested: list[str] = []
    page = browser_page(proxy)
    page.page.on("request", lambda request: requested.append(request.url))
    page.page.on("websocket", lambda socket: requested.append(socket.url))
    page.reload()

    first = random_file("through-chunks.bin", 6 * MiB)
    page.pick(first)
    row = page.wait_state(first, "done", timeout=90)
    href = row.locator("[data-action=download]").get_attribute("href")
    assert href is not None and href.startswith("/sub/files/"), href
    assert downloaded_sha256(urljoin(proxy.url, href)) == first.sha256
    # The list of stored files, fed by the live events, shows it with its prefixed URL.
    file_id = href.rsplit("/", 1)[1]
    listed = page.page.locator(f'.file[data-file-id="{file_id}"]')
    listed.wait_for()
    assert page.stored(file_id)["url"] == href

    page.configure()
    page.page.select_option("#transport", "ws")
    second = random_file("through-websocket.bin", 5 * MiB)
    page.pick(second)
    row = page.wait_state(second, "done", timeout=90)
    href = row.locator("[data-action=download]").get_attribute("href")
    assert href is not None and href.startswith("/sub/files/"), href
    assert downloaded_sha256(urljoin(proxy.url, href)) == second.sha256

    paths = [urlsplit(url).path for url in requested]
    assert any(path == "/sub/static/app.js" for path in paths), paths
    assert any(path == "/sub/api/ws" for path in paths), paths
    assert any(path.startswith("/sub/api/uploads/") for path in paths), paths
    assert all(path.startswith("/sub/") for path in paths), paths
