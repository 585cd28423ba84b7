"""Building and running the aiohttp application."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable
from typing import TYPE_CHECKING, TypeVar, cast

from aiohttp import web

from freight.config import ServerConfig, StartupError
from freight.core import UploadEngine
from freight.core.pipes import splicing_available
from freight.core.ports import Backend, HookOutbox
from freight.errors import FreightError
from freight.server.account import add_account_routes
from freight.server.api import add_api_routes, health
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
from freight.server.hooks import HOOKS, HookDispatcher, HookSettings
from freight.server.hooks.context import hook_context_middleware
from freight.server.ietf import handle_ietf
from freight.server.links import add_link_routes
from freight.server.logs import (
    ACCESS_LOGGER,
    TRUSTED_PROXIES,
    AccessLogger,
    TrustedProxies,
    configure_logging,
)
from freight.server.memory import trim_when_quiet, tune_heap
from freight.server.metrics import (
    METRICS,
    metrics_middleware,
    received_counter,
    sent_counter,
)
from freight.server.middleware import (
    auth_middleware,
    cors_middleware,
    error_middleware,
    origin_middleware,
)
from freight.server.origins import ORIGIN_POLICY, OriginPolicy
from freight.server.page import add_page_routes
from freight.server.principals import GATE, Gate
from freight.server.ready import add_ready_route
from freight.server.shutdown import request_grace, shut_down, stop_transfers
from freight.server.splice import Splicers
from freight.server.state import ENGINE, SETTINGS, SPLICERS
from freight.server.tls import CertificateReloader
from freight.server.tus import handle_tus
from freight.server.ws import add_ws_routes
from freight.storage.choice import open_backend, open_embedded, sync_window, writer_buffers
from freight.storage.users import open_users

if TYPE_CHECKING:
    from freight.server.tcp import TcpServer

__all__ = ["create_app", "run_server"]

log = logging.getLogger(__name__)

T = TypeVar("T")

# How much of a request body aiohttp may hold per connection: it stops reading the socket
# once it holds twice this, the last socket read (up to 256 KiB) included. With aiohttp's
# default of 256 KiB a connection whose handler waits on the disk piled up 768 KiB and
# handed the handler joined copies of up to 1 MiB: ~24 MiB read ahead across 32 uploads,
# and the copying made a single upload slower. Now each socket read is one piece, as is.
READ_BUFSIZE = 16 * 1024
# The largest body aiohttp buffers (JSON requests); upload bodies are streamed, not buffered.
CLIENT_MAX_SIZE = 1024 * 1024


async def files_endpoint(request: web.Request) -> web.StreamResponse:
    """Everything under ``/files/``: tus, IETF resumable uploads and downloads share URLs.

    What the request means was resolved once by :mod:`.dispatch`, before the auth check.
    """
    dispatch = resolve(request)
    upload_id = request.match_info.get("upload_id")
    if upload_id is not None and dispatch.download:
        engine = request.app[ENGINE]
        return await file_response(request, await engine.get(upload_id), engine)
    if dispatch.interop_version is not None:
        return await handle_ietf(request, dispatch.method, dispatch.interop_version)
    return await handle_tus(request, dispatch.method)


def create_app(config: ServerConfig, backend: Backend | None = None) -> web.Application:
    """The application serving ``config``; mounted under ``config.base_path`` if not ``/``.

    ``backend`` is where uploads are kept; without one, the embedded store ``config``
    names is opened (a fleet's is opened by :func:`serve`, which can wait for services).
    """
    app = _freight_app(config, backend or open_embedded(config))
    if config.base_path == "/":
        return app
    return _mounted(app, config)


def _mounted(app: web.Application, config: ServerConfig) -> web.Application:
    """``app`` under its base path, as a reverse proxy forwards a sub-path (docs/deploy.md).

    Every route, Location and file URL carries the prefix; the page finds its assets and API
    relative to where it was loaded. ``/health`` also answers at the root, for local probes.
    """
    prefix = config.base_path.rstrip("/")
    # Requests are made by the outer application: it sets the size of a buffered body.
    root = web.Application(client_max_size=CLIENT_MAX_SIZE)
    root[ENGINE] = app[ENGINE]
    root[SETTINGS] = config
    root[METRICS] = app[METRICS]  # the raw TCP listener counts its bytes through the root
    root[GATE] = app[GATE]  # and checks its HELLO's token through it

    async def to_mount(request: web.Request) -> web.StreamResponse:
        raise web.HTTPPermanentRedirect(config.base_path)

    # Before the mount, which would answer its bare prefix with a 404.
    root.router.add_route("*", prefix, to_mount)
    root.add_subapp(prefix, app)
    root.router.add_get("/health", health)
    return root


def _freight_app(config: ServerConfig, backend: Backend) -> web.Application:
    hook_settings = HookSettings.from_config(config)
    hooks = HookDispatcher(hook_settings) if hook_settings is not None else None
    app = web.Application(
        middlewares=[
            metrics_middleware,
            cors_middleware,
            error_middleware,
            dispatch_middleware,
            origin_middleware,
            auth_middleware(),
            *([hook_context_middleware] if hooks is not None else []),
        ],
        client_max_size=CLIENT_MAX_SIZE,
    )
    engine = UploadEngine(
        backend,
        fsync=config.fsync,
        sync_every=sync_window(config, backend),
        expire_after=config.expire_after,
        expire_unstarted=config.expire_unstarted,
        max_size=config.max_size,
        disk_reserve=config.disk_reserve,
        max_unfinished=config.max_unfinished,
        max_unfinished_per_client=config.max_unfinished_per_client,
        client_space_share=config.client_space_share,
        hash_uploads=config.sha256,
        hooks=hooks,
        hook_progress_interval=config.hook_progress_interval,
    )
    app[ENGINE] = engine
    if hooks is not None:
        app[HOOKS] = hooks
    engine.buffers = writer_buffers(backend)
    app[SETTINGS] = config
    app[GATE] = Gate(config.token)
    if splicing_available():
        app[SPLICERS] = Splicers()
    # Routes are registered from the mount point; _mounted puts the prefix before them all.
    base = config.files_path.removeprefix(config.base_path.rstrip("/")).rstrip("/")
    app[ORIGIN_POLICY] = OriginPolicy.from_config(config)
    app[TRUSTED_PROXIES] = TrustedProxies(config.trusted_proxies)
    app.router.add_route("*", f"{base}/", files_endpoint, name="files:collection")
    app.router.add_route("*", f"{base}", files_endpoint, name="files:collection-bare")
    app.router.add_route("*", f"{base}/{{upload_id}}", files_endpoint, name=DOWNLOAD_ROUTE)
    add_api_routes(app)
    add_link_routes(app)
    add_ws_routes(app)
    add_chunk_api(app)
    if hooks is not None:
        hooks.observer = app[METRICS]
    add_page_routes(app)
    add_ready_route(app)
    add_account_routes(app)
    app.cleanup_ctx.append(_users_lifecycle)
    app.cleanup_ctx.append(_engine_lifecycle)
    # Before aiohttp waits for running requests: an upload request ends only when its
    # client is done, so it is stopped at its last durable point instead.
    app.on_shutdown.append(stop_transfers)
    return app


async def _users_lifecycle(app: web.Application) -> AsyncIterator[None]:
    """Open the user store beside the engine's session records (it may be remote)."""
    gate = app[GATE]
    if gate.users is None:
        gate.users = await open_users(app[SETTINGS], app[ENGINE].sessions)
    yield
    if gate.users is not None:
        await gate.users.close()


async def _engine_lifecycle(app: web.Application) -> AsyncIterator[None]:
    engine = app[ENGINE]
    hooks = app.get(HOOKS)
    if hooks is not None:
        # Both session repositories keep the outbox beside the records (HookOutbox).
        hooks.start(cast(HookOutbox, engine.sessions))
    await engine.resume_interrupted_work()
    sweeper = asyncio.ensure_future(engine.run_sweeper(app[SETTINGS].sweep_interval))
    trimmer = asyncio.ensure_future(trim_when_quiet(lambda: engine.bytes_written_total))
    yield
    for task in (sweeper, trimmer):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    if hooks is not None:
        await hooks.close()  # what it did not deliver stays in the outbox
    await engine.close()
    if SPLICERS in app:
        app[SPLICERS].shutdown()


async def serve(config: ServerConfig) -> None:
    app = await _create_app_or_explain(config)
    loop = asyncio.get_running_loop()
    quiet_accept_errors(loop)
    options = {
        **handler_options(config),
        **_access_log_options(config),
        "read_bufsize": READ_BUFSIZE,
    }
    grace = request_grace(config.shutdown_timeout)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=grace, **options)
    await runner.setup()
    guard = ConnectionGuard(config.header_timeout, pending_cap(config.max_pending))
    tls = _certificates(config)
    ssl_context = tls.context if tls is not None else None
    site = GuardedSite(runner, config.host, config.port, guard, options, ssl_context=ssl_context)
    await _listen_or_explain(site.start(), runner, config.host, config.port)
    host, port = runner.addresses[0][:2]
    scheme = "https" if tls is not None else "http"
    mount = config.base_path if config.base_path != "/" else ""
    where = f"{scheme}://{host}:{port}{mount}"
    kept = f"data in {config.data_dir}" if config.store == "local" else f"store {config.store}"
    print(f"freight listening on {where} ({kept})", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if tls is not None:
        loop.add_signal_handler(signal.SIGHUP, tls.reload)
    tcp: TcpServer | None = None
    try:
        tcp = await _start_tcp(app, config)
        await stop.wait()
    finally:
        await shut_down(runner, tcp, config.shutdown_timeout)


def _access_log_options(config: ServerConfig) -> dict[str, object]:
    trusted = TrustedProxies(config.trusted_proxies)
    return {
        "access_log": logging.getLogger(ACCESS_LOGGER),
        "access_log_class": AccessLogger.trusting(trusted),
    }


async def _create_app_or_explain(config: ServerConfig) -> web.Application:
    try:
        backend = await open_backend(config)
    except FreightError as exc:
        raise StartupError(f"cannot use the store {config.store}: {exc.message}") from exc
    except Exception as exc:
        if not _data_dir_failure(exc):
            raise
        reason = getattr(exc, "strerror", None) or str(exc)
        raise StartupError(f"cannot use data directory {config.data_dir}: {reason}") from exc
    try:
        return create_app(config, backend)
    except BaseException:
        await backend.close()
        raise


def _data_dir_failure(exc: Exception) -> bool:
    """Whether opening the store failed on its files: the disk, or SQLite's database.

    SQLite is loaded only by the stores that use it (a fleet node never does), so an
    error of its kind is possible only once it has been imported.
    """
    sqlite3 = sys.modules.get("sqlite3")
    return isinstance(exc, OSError) or (sqlite3 is not None and isinstance(exc, sqlite3.Error))


async def _listen_or_explain(
    starting: Awaitable[T], runner: web.AppRunner | None, host: str, port: int
) -> T:
    """Await a listener's start; a busy port or a bad address becomes a StartupError (after
    ``runner``, if given, let the engine go)."""
    try:
        return await starting
    except OSError as exc:
        if runner is not None:
            await runner.cleanup()
        if isinstance(exc, socket.gaierror) or not exc.errno:
            reason = exc.strerror or str(exc)
        else:
            reason = os.strerror(exc.errno).lower()
        raise StartupError(f"cannot listen on {host}:{port}: {reason}") from exc


def _certificates(config: ServerConfig) -> CertificateReloader | None:
    """The HTTPS listener's certificates (reloaded on SIGHUP), or None for plain HTTP."""
    if config.tls_cert is None or config.tls_key is None:
        return None
    return CertificateReloader(config.tls_cert, config.tls_key)


async def _start_tcp(app: web.Application, config: ServerConfig) -> TcpServer | None:
    """The raw TCP listener (``--tcp-port``), sharing the HTTP app's engine."""
    if config.tcp_port is None:
        return None
    from freight.server.tcp import start_tcp_server

    tcp = await _listen_or_explain(
        start_tcp_server(
            app[ENGINE],
            config,
            on_received=received_counter(app, "tcp"),
            on_sent=sent_counter(app, "tcp"),
            gate=app[GATE],
        ),
        None,
        config.host,
        config.tcp_port,
    )
    host, port = tcp.address
    shown = f"[{host}]" if ":" in host else host  # an IPv6 address needs brackets in a URL
    print(f"freight tcp listening on tcp://{shown}:{port}", flush=True)
    return tcp


def run_server(config: ServerConfig) -> None:
    """Run until SIGINT or SIGTERM. Plain asyncio on purpose: uvloop has no sendfile.

    Raises :class:`StartupError` when the server cannot start as configured.
    """
    configure_logging(config.log_level, config.log_format)
    tune_heap()
    asyncio.run(serve(config))
