"""Building and running the aiohttp application."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator

from aiohttp import web

from freight.config import FsyncPolicy, ServerConfig
from freight.core import UploadEngine
from freight.core.pipes import splicing_available
from freight.server.api import add_api_routes
from freight.server.chunks import add_chunk_api
from freight.server.connections import (
    ConnectionGuard,
    GuardedSite,
    handler_options,
    pending_cap,
    quiet_accept_errors,
)
from freight.server.dispatch import DOWNLOAD_ROUTE, dispatch_middleware, resolve
from freight.server.download import file_response
from freight.server.ietf import handle_ietf
from freight.server.links import add_link_routes
from freight.server.metrics import metrics_middleware, received_counter, sent_counter
from freight.server.middleware import (
    auth_middleware,
    cors_middleware,
    error_middleware,
    origin_middleware,
)
from freight.server.origins import ORIGIN_POLICY, OriginPolicy
from freight.server.page import add_page_routes
from freight.server.ready import add_ready_route
from freight.server.shutdown import request_grace, shut_down, stop_transfers
from freight.server.splice import Splicers
from freight.server.state import ENGINE, SETTINGS, SPLICERS
from freight.server.tcp import TcpServer, start_tcp_server
from freight.server.tus import handle_tus
from freight.server.ws import add_ws_routes
from freight.storage import LocalStore

__all__ = ["create_app", "run_server"]

log = logging.getLogger(__name__)

# How much of a request body aiohttp may hold per connection: it stops reading the socket
# once it holds twice this, the last socket read (up to 256 KiB) included. With aiohttp's
# default of 256 KiB a connection whose handler waits on the disk piled up 768 KiB and
# handed the handler joined copies of up to 1 MiB: ~24 MiB read ahead across 32 uploads,
# and the copying made a single upload slower. Now each socket read is one piece, as is.
READ_BUFSIZE = 16 * 1024


async def files_endpoint(request: web.Request) -> web.StreamResponse:
    """Everything under ``/files/``: tus, IETF resumable uploads and downloads share URLs.

    What the request means was resolved once by :mod:`.dispatch`, before the auth check.
    """
    dispatch = resolve(request)
    upload_id = request.match_info.get("upload_id")
    if upload_id is not None and dispatch.download:
        engine = request.app[ENGINE]
        return file_response(request, await engine.get(upload_id), engine.store)
    if dispatch.interop_version is not None:
        return await handle_ietf(request, dispatch.method, dispatch.interop_version)
    return await handle_tus(request, dispatch.method)


def create_app(config: ServerConfig) -> web.Application:
    app = web.Application(
        middlewares=[
            metrics_middleware,
            cors_middleware,
            error_middleware,
            dispatch_middleware,
            origin_middleware,
            auth_middleware(config.token),
        ],
        client_max_size=1024 * 1024,
    )
    store = LocalStore(config.data_dir, durable=config.fsync is not FsyncPolicy.NEVER)
    engine = UploadEngine(
        store,
        fsync=config.fsync,
        sync_every=config.sync_every,
        expire_after=config.expire_after,
        expire_unstarted=config.expire_unstarted,
        max_size=config.max_size,
        disk_reserve=config.disk_reserve,
        max_unfinished=config.max_unfinished,
        max_unfinished_per_client=config.max_unfinished_per_client,
        client_space_share=config.client_space_share,
        hash_uploads=config.sha256,
    )
    app[ENGINE] = engine
    app[SETTINGS] = config
    if splicing_available():
        app[SPLICERS] = Splicers()
    base = config.base_path.rstrip("/")
    app[ORIGIN_POLICY] = OriginPolicy.from_config(config)
    app.router.add_route("*", f"{base}/", files_endpoint, name="files:collection")
    app.router.add_route("*", f"{base}", files_endpoint, name="files:collection-bare")
    app.router.add_route("*", f"{base}/{{upload_id}}", files_endpoint, name=DOWNLOAD_ROUTE)
    add_api_routes(app)
    add_link_routes(app)
    add_ws_routes(app)
    add_chunk_api(app)
    add_page_routes(app)
    add_ready_route(app)
    app.cleanup_ctx.append(_engine_lifecycle)
    # Before aiohttp waits for running requests: an upload request ends only when its
    # client is done, so it is stopped at its last durable point instead.
    app.on_shutdown.append(stop_transfers)
    return app


async def _engine_lifecycle(app: web.Application) -> AsyncIterator[None]:
    engine = app[ENGINE]
    await engine.resume_interrupted_work()
    sweeper = asyncio.ensure_future(engine.run_sweeper(app[SETTINGS].sweep_interval))
    yield
    sweeper.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sweeper
    await engine.close()
    if SPLICERS in app:
        app[SPLICERS].shutdown()


async def serve(config: ServerConfig) -> None:
    app = create_app(config)
    loop = asyncio.get_running_loop()
    quiet_accept_errors(loop)
    options = {**handler_options(config), "access_log": None, "read_bufsize": READ_BUFSIZE}
    grace = request_grace(config.shutdown_timeout)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=grace, **options)
    await runner.setup()
    guard = ConnectionGuard(config.header_timeout, pending_cap(config.max_pending))
    site = GuardedSite(runner, config.host, config.port, guard, options)
    await site.start()
    host, port = runner.addresses[0][:2]
    print(f"freight listening on http://{host}:{port} (data in {config.data_dir})", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    tcp: TcpServer | None = None
    try:
        tcp = await _start_tcp(app, config)
        await stop.wait()
    finally:
        await shut_down(runner, tcp, config.shutdown_timeout)


async def _start_tcp(app: web.Application, config: ServerConfig) -> TcpServer | None:
    """The raw TCP listener (``--tcp-port``), sharing the HTTP app's engine."""
    if config.tcp_port is None:
        return None
    tcp = await start_tcp_server(
        app[ENGINE],
        config,
        on_received=received_counter(app, "tcp"),
        on_sent=sent_counter(app, "tcp"),
    )
    host, port = tcp.address
    shown = f"[{host}]" if ":" in host else host  # an IPv6 address needs brackets in a URL
    print(f"freight tcp listening on tcp://{shown}:{port}", flush=True)
    return tcp


def run_server(config: ServerConfig) -> None:
    """Run until SIGINT or SIGTERM. Plain asyncio on purpose: uvloop has no sendfile."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    asyncio.run(serve(config))
