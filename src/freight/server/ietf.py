"""IETF resumable uploads on aiohttp (being written)."""

from __future__ import annotations

from aiohttp import web

from freight.errors import MethodNotAllowed

__all__ = ["handle_ietf"]


async def handle_ietf(request: web.Request, method: str, version: int) -> web.StreamResponse:
    raise MethodNotAllowed("IETF resumable uploads are not available yet")
