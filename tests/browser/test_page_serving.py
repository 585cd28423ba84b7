"""How the server serves the page: no token for it, a token for the API, no stray files.

These need no browser: plain HTTP against a real ``freight serve``.
"""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

STATIC = Path(__file__).resolve().parents[2] / "src" / "freight" / "server" / "static"
TOKEN = "page-test-token"


def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


@pytest.fixture
def token_server(tmp_path: Path, server_factory: Any) -> Any:
    return server_factory(data_dir=tmp_path / "data", args=["--token", TOKEN]).start()


def test_the_page_and_its_files_load_without_a_token_but_the_api_needs_one(
    token_server: Any,
) -> None:
    status, headers, body = fetch(token_server.url + "/")
    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    assert b'<script type="module" src="static/app.js">' in body
    for name, kind in [("app.js", "text/javascript"), ("style.css", "text/css")]:
        status, headers, _ = fetch(f"{token_server.url}/static/{name}")
        assert (status, headers["Content-Type"].split(";")[0]) == (200, kind)
    assert fetch(token_server.url + "/api/files")[0] == 401
    assert fetch(token_server.url + "/api/uploads")[0] == 401


@pytest.mark.parametrize(
    "path",
    [
        "/static/nope.js",
        "/static/..%2Fpage.py",
        "/static/%2e%2e/page.py",
        "/static/../api/files",
        "/static/",
        "/static/page.py",
    ],
)
def test_only_the_page_files_are_served(token_server: Any, path: str) -> None:
    """Nothing but the files of static/ itself, and no way through to the API unauthenticated."""
    status, _, body = fetch(token_server.url + path)
    assert status in (401, 404), (status, body[:200])
    assert b"import" not in body and b'"files"' not in body


def test_unchanged_files_revalidate_with_a_304(freight_server: Any) -> None:
    status, headers, _ = fetch(freight_server.url + "/static/uploader.js")
    assert status == 200 and headers["Cache-Control"] == "no-cache"
    status, _, body = fetch(
        freight_server.url + "/static/uploader.js", {"If-None-Match": headers["ETag"]}
    )
    assert (status, body) == (304, b"")


def test_every_module_and_asset_the_page_names_is_served(freight_server: Any) -> None:
    """No build step: each relative import and each /static/ reference must exist."""
    wanted = {"index.html"}
    for path in STATIC.glob("*.js"):
        wanted |= set(re.findall(r'(?:from|import)\s*\(?\s*"\./([\w.-]+)"', path.read_text()))
        wanted |= set(re.findall(r'new URL\("\./([\w.-]+)"', path.read_text()))
    wanted |= set(re.findall(r'"static/([\w.-]+)"', (STATIC / "index.html").read_text()))
    assert {"app.js", "hash-worker.js", "sha256.js", "style.css", "icon.svg"} <= wanted
    for name in sorted(wanted):
        status, _, _ = fetch(f"{freight_server.url}/static/{name}")
        assert status == 200, f"{name} is referenced but not served"
