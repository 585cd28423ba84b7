"""``GET /ready``: whether this server can take uploads now (``/health`` only says it runs).

Three checks, each bounded by :data:`CHECK_TIMEOUT` (a disk that stopped answering fails
its check instead of hanging the probe):

* ``database``: the upload table answers a query;
* ``storage``: a small file can be created, written, synced and removed where uploads are
  written (a filesystem remounted read-only, or a directory that went away, fails it);
* ``disk_space``: the free space is above ``--disk-reserve`` (below it every creation is
  refused with 507).

200 ``{"status": "ready", "checks": {name: {"ok": true}}}`` when all pass; otherwise 503,
``"status": "unready"`` and, for each failed check, ``"ok": false`` with an ``error``. Like
``/health`` it needs no token, so it says nothing an operator would keep to themselves: no
paths and no byte counts (``/metrics`` has the free space). A probe costs a query and a
file, so answers are shared for :data:`CACHE_SECONDS`: a flood of probes runs one check.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

from aiohttp import web

from freight.core import UploadEngine
from freight.server.state import ENGINE, SETTINGS

__all__ = ["CACHE_SECONDS", "CHECK_TIMEOUT", "add_ready_route"]

CHECK_TIMEOUT: Final = 2.0
CACHE_SECONDS: Final = 1.0
_PROBES = itertools.count()


@dataclass
class _Cached:
    at: float = float("-inf")
    answer: asyncio.Future[tuple[int, dict[str, object]]] | None = None


_CACHE = web.AppKey("freight.ready_cache", _Cached)


def add_ready_route(app: web.Application) -> None:
    app[_CACHE] = _Cached()
    # "public:": like the page, no token and any origin (see server/middleware.py).
    app.router.add_get("/ready", ready, name="public:ready")


async def ready(request: web.Request) -> web.Response:
    cached = request.app[_CACHE]
    loop = asyncio.get_running_loop()
    if cached.answer is None or loop.time() - cached.at > CACHE_SECONDS:
        cached.at = loop.time()
        cached.answer = asyncio.ensure_future(_check(request.app))
    status, body = await asyncio.shield(cached.answer)
    return web.json_response(body, status=status, headers={"Cache-Control": "no-store"})


async def _check(app: web.Application) -> tuple[int, dict[str, object]]:
    engine = app[ENGINE]
    reserve = app[SETTINGS].disk_reserve
    checks: dict[str, Callable[[], Awaitable[None]]] = {
        "database": lambda: _database(engine),
        "storage": engine.blobs.probe,
        "disk_space": lambda: _disk_space(engine, reserve),
    }
    results = await asyncio.gather(*(_run(check) for check in checks.values()))
    report = dict(zip(checks, results, strict=True))
    good = all(result["ok"] for result in results)
    body: dict[str, object] = {"status": "ready" if good else "unready", "checks": report}
    return (200 if good else 503), body


async def _run(check: Callable[[], Awaitable[None]]) -> dict[str, object]:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            await check()
    except TimeoutError:
        return {"ok": False, "error": f"no answer within {CHECK_TIMEOUT:g} s"}
    except _NotReady as exc:
        return {"ok": False, "error": str(exc)}
    except OSError as exc:
        return {"ok": False, "error": exc.strerror or type(exc).__name__}
    except Exception as exc:  # a failing check is the answer, never a 500
        return {"ok": False, "error": type(exc).__name__}
    return {"ok": True}


class _NotReady(Exception):
    """A check's own finding, safe to show."""


async def _database(engine: UploadEngine) -> None:
    await engine.unfinished_count()


async def _disk_space(engine: UploadEngine, reserve: int) -> None:
    free = await engine.blobs.free_bytes()
    if free is not None and free <= reserve:
        raise _NotReady("free disk space is below the reserve; uploads are refused")
