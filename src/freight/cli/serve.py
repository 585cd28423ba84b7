"""``freight serve``: every option from a flag, a ``FREIGHT_*`` variable or a TOML file.

Each option is declared once, below; its default is :class:`ServerConfig`'s. Where a value
comes from is click's own order, **flag > environment > config file > default**: the
environment variable is ``FREIGHT_`` and the option's name (``--data-dir`` reads
``FREIGHT_DATA_DIR``), and the config file (``--config PATH`` or ``FREIGHT_CONFIG``) is
loaded by an eager option into the context's ``default_map``. Its keys are the option names,
with dashes or underscores; a key that names no option, or a value of the wrong type, is
an error naming the key. ``--print-config`` prints the settings in effect as a config file.

Every way ``serve`` can fail to start (a bad option, config file, port, host or data
directory) is one line on stderr, ``freight: error: ...``, and exit status 2.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from freight.cli.hook_options import hook_options
from freight.cli.settings import (
    ServeCommand,
    StartupFailed,
    every_option_from_environment,
    load_config_file,
    render_config,
)
from freight.cli.store_options import check_store, store_options
from freight.config import FsyncPolicy, ServerConfig, StartupError

__all__ = ["serve"]

F = TypeVar("F", bound=Callable[..., Any])
DEFAULTS = ServerConfig()


def _split_list(values: tuple[str, ...]) -> tuple[str, ...]:
    """Repeated options, each also comma-separated (as one environment variable is)."""
    return tuple(v.strip() for value in values for v in value.split(",") if v.strip())


def _cors_origins(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> Any:
    from freight.server.origins import parse_origin

    origins = _split_list(values)
    for origin in origins:
        if origin != "*":
            try:
                parse_origin(origin)
            except ValueError as exc:
                raise click.BadParameter(str(exc)) from None
    return origins


def _trusted_proxies(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> Any:
    from freight.server.logs import TrustedProxies

    networks = _split_list(values)
    try:
        TrustedProxies(networks)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return networks


def _base_path(ctx: click.Context, param: click.Parameter, value: str) -> Any:
    from freight.config import normalise_base_path

    try:
        return normalise_base_path(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _check_tls(cert: Path | None, key: Path | None) -> None:
    """Refuse unusable certificate files before the server starts, in one line."""
    if (cert is None) != (key is None):
        raise click.UsageError("--tls-cert and --tls-key go together")
    if cert is None or key is None:
        return
    import ssl

    from freight.server.tls import load_context

    try:
        load_context(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise click.BadParameter(
            f"cannot use {cert} with {key}: {exc}", param_hint="--tls-cert/--tls-key"
        ) from None


class _ServeCommand(ServeCommand):
    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        from freight.server.memory import lighten_imports

        lighten_imports()  # before the options' checks import aiohttp
        return super().make_context(info_name, args, parent, **extra)


def _options(function: F) -> F:
    """Every ``serve`` option, declared once."""
    decorators = [
        click.option(
            "--config",
            type=click.Path(dir_okay=False, path_type=Path),
            is_eager=True,
            expose_value=False,
            callback=load_config_file,
            help="TOML file of settings, keyed by option name (see --print-config).",
        ),
        click.option(
            "--host", default=DEFAULTS.host, show_default=True, help="Address to listen on."
        ),
        click.option(
            "--port",
            type=click.IntRange(0, 65535),
            default=DEFAULTS.port,
            show_default=True,
            help="TCP port (0 picks a free one).",
        ),
        click.option(
            "--data-dir",
            type=click.Path(file_okay=False, path_type=Path),
            default=DEFAULTS.data_dir,
            show_default=True,
            help="Where uploads, files and the SQLite metadata live (created if missing).",
        ),
        click.option("--token", help="Require this bearer token."),
        click.option(
            "--max-size", type=click.IntRange(min=0), help="Largest upload accepted, in bytes."
        ),
        click.option(
            "--fsync",
            type=click.Choice([p.value for p in FsyncPolicy]),
            default=DEFAULTS.fsync.value,
            show_default=True,
            callback=lambda ctx, param, value: FsyncPolicy(value),
            help="When received bytes are forced to disk before being acknowledged.",
        ),
        click.option(
            "--sync-every",
            type=click.IntRange(min=1),
            default=DEFAULTS.sync_every,
            show_default=True,
            help="With --fsync batch, bytes a long request may write between syncs (at most"
            " one part with an s3:// store: a client resumes through another node from there).",
        ),
        click.option(
            "--expire-after",
            type=float,
            default=DEFAULTS.expire_after,
            show_default=True,
            help="Seconds an unfinished upload may sit idle before it is deleted.",
        ),
        click.option(
            "--expire-unstarted",
            type=float,
            default=DEFAULTS.expire_unstarted,
            show_default=True,
            help="Seconds an upload that never received a byte is kept before it is deleted.",
        ),
        click.option(
            "--sweep-interval",
            type=click.FloatRange(min=0.1),
            default=DEFAULTS.sweep_interval,
            show_default=True,
            help="Seconds between sweeps that delete expired uploads and finish complete ones.",
        ),
        click.option(
            "--disk-reserve",
            type=click.IntRange(min=0),
            default=DEFAULTS.disk_reserve,
            show_default=True,
            help="Bytes of disk that new uploads may not claim.",
        ),
        click.option(
            "--max-unfinished",
            type=click.IntRange(min=1),
            default=DEFAULTS.max_unfinished,
            show_default=True,
            help="Unfinished uploads the server holds at most (503 beyond).",
        ),
        click.option(
            "--max-unfinished-per-client",
            type=click.IntRange(min=1),
            default=DEFAULTS.max_unfinished_per_client,
            show_default=True,
            help="Unfinished uploads one client address may hold (429 beyond).",
        ),
        click.option(
            "--client-space-share",
            type=click.FloatRange(min=0.0, max=1.0, min_open=True),
            default=DEFAULTS.client_space_share,
            show_default=True,
            help="Share of the free disk one client address's unfinished uploads may claim.",
        ),
        click.option(
            "--tcp-port",
            type=click.IntRange(0, 65535),
            help="Also serve freight's raw TCP protocol on this port (0 picks a free one); "
            "off by default.",
        ),
        click.option(
            "--sha256/--no-sha256",
            default=DEFAULTS.sha256,
            show_default=True,
            help="Keep a running SHA-256 of every upload. --no-sha256 skips that work (about "
            "one CPU-second per GiB, more on small boards); a file then has a SHA-256 only "
            "when its client declared one, checked by reading the file back at the end.",
        ),
        click.option(
            "--header-timeout",
            type=click.FloatRange(min=0, min_open=True),
            default=DEFAULTS.header_timeout,
            show_default=True,
            help="Seconds a new connection has to send a whole request head.",
        ),
        click.option(
            "--idle-timeout",
            type=click.FloatRange(min=0, min_open=True),
            default=DEFAULTS.idle_timeout,
            show_default=True,
            help="Seconds a body, download or TCP stream may move less than --min-rate before "
            "its connection is closed (what was durable is kept; clients resume).",
        ),
        click.option(
            "--min-rate",
            type=click.IntRange(min=0),
            default=DEFAULTS.min_rate,
            show_default=True,
            help="Bytes per second below which a transfer counts as stalled (0: only no bytes "
            "at all).",
        ),
        click.option(
            "--keepalive-timeout",
            type=click.FloatRange(min=0, min_open=True),
            default=DEFAULTS.keepalive_timeout,
            show_default=True,
            help="Seconds an idle keep-alive connection stays open.",
        ),
        click.option(
            "--max-pending",
            type=click.IntRange(min=1),
            default=DEFAULTS.max_pending,
            show_default=True,
            help="Connections that may wait for a request head at once (at most a quarter of "
            "the open-file limit); past that the longest-waiting one is closed.",
        ),
        click.option(
            "--cors-origin",
            "cors_origins",
            multiple=True,
            callback=_cors_origins,
            metavar="ORIGIN",
            help="Let web pages from ORIGIN (https://host[:port], or * for any) use a server "
            "without a token, and grant it Chrome's private-network access; repeatable, or "
            "comma-separated. By default only the server's own page may.",
        ),
        click.option(
            "--base-path",
            default=DEFAULTS.base_path,
            show_default=True,
            callback=_base_path,
            metavar="PATH",
            help="Serve everything under PATH (e.g. /sub/) for a reverse proxy that forwards "
            "a sub-path: tus at PATH/files/, the API at PATH/api/, the page at PATH.",
        ),
        click.option(
            "--tls-cert",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            default=None,
            help="Serve HTTPS with this PEM certificate chain (with --tls-key); SIGHUP reloads "
            "both files for new connections. The --tcp-port listener stays plain TCP.",
        ),
        click.option(
            "--tls-key",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            default=None,
            help="The PEM private key of --tls-cert.",
        ),
        click.option(
            "--shutdown-timeout",
            type=click.FloatRange(min=0, min_open=True),
            default=DEFAULTS.shutdown_timeout,
            show_default=True,
            help="Seconds SIGTERM may take in all: uploads stop at their last durable point at "
            "once, other requests get what is left, then the process exits.",
        ),
        click.option(
            "--log-level",
            type=click.Choice(["debug", "info", "warning", "error"]),
            default=DEFAULTS.log_level,
            show_default=True,
            help="Least severe log lines written (stderr). Tracebacks only at debug.",
        ),
        click.option(
            "--log-format",
            type=click.Choice(["text", "json"]),
            default=DEFAULTS.log_format,
            show_default=True,
            help="Log lines as 'time level logger: message key=value ...' or as JSON objects.",
        ),
        click.option(
            "--trusted-proxy",
            "trusted_proxies",
            multiple=True,
            callback=_trusted_proxies,
            metavar="CIDR",
            help="Believe X-Forwarded-For from these proxy addresses (the access log's client "
            "address); repeatable, or comma-separated.",
        ),
        click.option(
            "--print-config",
            is_flag=True,
            help="Print the settings in effect (as a config file, token masked) and exit.",
        ),
    ]
    for decorate in reversed(decorators):
        function = decorate(function)
    return function


@every_option_from_environment
@click.command(cls=_ServeCommand)
@_options
@store_options
@hook_options
@click.pass_context
def serve(ctx: click.Context, /, print_config: bool, **settings: Any) -> None:
    """Run the freight server.

    Every option can also be set by a FREIGHT_* environment variable (named after it, shown
    below) or a key in the --config file; a flag wins over the environment, which wins over
    the file.
    """
    if print_config:
        click.echo(render_config(ctx))
        return
    _check_tls(settings["tls_cert"], settings["tls_key"])
    check_store(settings)
    from freight.server.app import run_server

    try:
        run_server(ServerConfig(**settings))
    except StartupError as exc:
        raise StartupFailed(str(exc)) from None
