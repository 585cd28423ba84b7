"""The browser page: ``GET /`` and its files under ``/static/``, served without a token.

The page is plain HTML, CSS and JavaScript modules in ``static/`` (no build step, nothing
from a CDN, works offline); every API call it makes carries the token itself. The files are
read once when the application is built and served from memory, so no request path ever
reaches the file system. Each answer carries a strong ``ETag`` and ``Cache-Control:
no-cache``: browsers revalidate (a cheap 304) and never run a stale script after an upgrade.

Routes that need no token are named ``public:…``; :mod:`freight.server.middleware` lets
them through.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

__all__ = ["STATIC_DIR", "StaticFile", "add_page_routes", "load_static_files"]

STATIC_DIR = Path(__file__).with_name("static")

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}

# Everything the page needs comes from this origin; nothing inline, no frames.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "img-src 'self' data:",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ]
)


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    content_type: str
    etag: str


STATIC_FILES: web.AppKey[dict[str, StaticFile]] = web.AppKey("freight.static_files")


def load_static_files(directory: Path = STATIC_DIR) -> dict[str, StaticFile]:
    """Every servable file in ``directory`` (not its subfolders), by file name."""
    files: dict[str, StaticFile] = {}
    for path in sorted(directory.iterdir()):
        content_type = CONTENT_TYPES.get(path.suffix)
        if content_type is None or not path.is_file():
            continue
        body = path.read_bytes()
        files[path.name] = StaticFile(body, content_type, hashlib.sha256(body).hexdigest()[:32])
    return files


def _respond(request: web.Request, file: StaticFile) -> web.Response:
    headers = {
        "ETag": f'"{file.etag}"',
        "Cache-Control": "no-cache",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        "Referrer-Policy": "no-referrer",
    }
    if_none_match = request.headers.get("If-None-Match", "")
    if f'"{file.etag}"' in (tag.strip().removeprefix("W/") for tag in if_none_match.split(",")):
        return web.Response(status=304, headers=headers)
    return web.Response(body=file.body, headers={**headers, "Content-Type": file.content_type})


async def index(request: web.Request) -> web.Response:
    return _respond(request, request.app[STATIC_FILES]["index.html"])


async def static_file(request: web.Request) -> web.Response:
    file = request.app[STATIC_FILES].get(request.match_info["name"])
    if file is None:
        raise web.HTTPNotFound(text="no such file\n")
    return _respond(request, file)


def add_page_routes(app: web.Application) -> None:
    """Serve the page at ``/`` and its files at ``/static/{name}``."""
    app[STATIC_FILES] = load_static_files()
    app.router.add_get("/", index, name="public:page")
    app.router.add_get("/static/{name}", static_file, name="public:static")
