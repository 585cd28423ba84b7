"""Entry point of the ``freight`` command."""

from __future__ import annotations

from pathlib import Path

import click

from freight.cli.files import ls, rm
from freight.cli.transfer import get, send
from freight.config import FsyncPolicy, ServerConfig

__all__ = ["cli", "main"]


@click.group()
@click.version_option(package_name="freight")
def cli() -> None:
    """Move files larger than RAM between machines: resumable, durable, fast."""


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, help="TCP port (0 picks a free one).")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("freight-data"),
    show_default=True,
    help="Where uploads, files and the SQLite metadata live.",
)
@click.option("--token", envvar="FREIGHT_TOKEN", help="Require this bearer token.")
@click.option("--max-size", type=int, default=None, help="Largest upload accepted, in bytes.")
@click.option(
    "--fsync",
    type=click.Choice([p.value for p in FsyncPolicy]),
    default=FsyncPolicy.BATCH.value,
    show_default=True,
    help="When received bytes are forced to disk before being acknowledged.",
)
@click.option(
    "--expire-after",
    type=float,
    default=24 * 3600.0,
    show_default=True,
    help="Seconds an unfinished upload may sit idle before it is deleted.",
)
@click.option(
    "--expire-unstarted",
    type=float,
    default=600.0,
    show_default=True,
    help="Seconds an upload that never received a byte is kept before it is deleted.",
)
@click.option(
    "--sweep-interval",
    type=click.FloatRange(min=0.1),
    default=60.0,
    show_default=True,
    help="Seconds between sweeps that delete expired uploads and finish complete ones.",
)
@click.option(
    "--disk-reserve",
    type=click.IntRange(min=0),
    default=64 * 1024 * 1024,
    show_default=True,
    help="Bytes of disk that new uploads may not claim.",
)
@click.option(
    "--max-unfinished",
    type=click.IntRange(min=1),
    default=10_000,
    show_default=True,
    help="Unfinished uploads the server holds at most (503 beyond).",
)
@click.option(
    "--max-unfinished-per-client",
    type=click.IntRange(min=1),
    default=1_000,
    show_default=True,
    help="Unfinished uploads one client address may hold (429 beyond).",
)
@click.option(
    "--client-space-share",
    type=click.FloatRange(min=0.0, max=1.0, min_open=True),
    default=0.5,
    show_default=True,
    help="Share of the free disk one client address's unfinished uploads may claim.",
)
@click.option(
    "--tcp-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Also serve freight's raw TCP protocol on this port (0 picks a free one); off by default.",
)
@click.option(
    "--sha256/--no-sha256",
    default=True,
    show_default=True,
    help="Keep a running SHA-256 of every upload. --no-sha256 skips that work (about one "
    "CPU-second per GiB, more on small boards); a file then has a SHA-256 only when its "
    "client declared one, checked by reading the file back at the end.",
)
@click.option(
    "--header-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=10.0,
    show_default=True,
    help="Seconds a new connection has to send a whole request head.",
)
@click.option(
    "--idle-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=30.0,
    show_default=True,
    help="Seconds a body, download or TCP stream may move less than --min-rate before "
    "its connection is closed (what was durable is kept; clients resume).",
)
@click.option(
    "--min-rate",
    type=click.IntRange(min=0),
    default=1024,
    show_default=True,
    help="Bytes per second below which a transfer counts as stalled (0: only no bytes at all).",
)
@click.option(
    "--keepalive-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    help="Seconds an idle keep-alive connection stays open.",
)
@click.option(
    "--max-pending",
    type=click.IntRange(min=1),
    default=256,
    show_default=True,
    help="Connections that may wait for a request head at once (at most a quarter of the "
    "open-file limit); past that the longest-waiting one is closed.",
)
@click.option(
    "--cors-origin",
    "cors_origins",
    multiple=True,
    envvar="FREIGHT_CORS_ORIGIN",
    callback=lambda ctx, param, value: _cors_origins(value),
    metavar="ORIGIN",
    help="Let web pages from ORIGIN (https://host[:port], or * for any) use a server without "
    "a token, and grant it Chrome's private-network access; repeatable, or comma-separated "
    "in FREIGHT_CORS_ORIGIN. By default only the server's own page may.",
)
@click.option(
    "--shutdown-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=10.0,
    show_default=True,
    help="Seconds SIGTERM may take: transfers stop at their last durable point (clients "
    "resume), other requests get what is left, then the process exits.",
)
def serve(
    host: str,
    port: int,
    data_dir: Path,
    token: str | None,
    max_size: int | None,
    fsync: str,
    expire_after: float,
    expire_unstarted: float,
    sweep_interval: float,
    disk_reserve: int,
    max_unfinished: int,
    max_unfinished_per_client: int,
    client_space_share: float,
    tcp_port: int | None,
    sha256: bool,
    header_timeout: float,
    idle_timeout: float,
    min_rate: int,
    keepalive_timeout: float,
    max_pending: int,
    cors_origins: tuple[str, ...],
    shutdown_timeout: float,
) -> None:
    """Run the freight server."""
    from freight.server.app import run_server

    config = ServerConfig(
        data_dir=data_dir,
        host=host,
        port=port,
        token=token,
        max_size=max_size,
        fsync=FsyncPolicy(fsync),
        expire_after=expire_after,
        expire_unstarted=expire_unstarted,
        sweep_interval=sweep_interval,
        disk_reserve=disk_reserve,
        max_unfinished=max_unfinished,
        max_unfinished_per_client=max_unfinished_per_client,
        client_space_share=client_space_share,
        tcp_port=tcp_port,
        sha256=sha256,
        header_timeout=header_timeout,
        idle_timeout=idle_timeout,
        min_rate=min_rate,
        keepalive_timeout=keepalive_timeout,
        max_pending=max_pending,
        cors_origins=cors_origins,
        shutdown_timeout=shutdown_timeout,
    )
    run_server(config)


def _cors_origins(values: tuple[str, ...]) -> tuple[str, ...]:
    from freight.server.origins import parse_origin

    origins = tuple(o.strip() for value in values for o in value.split(",") if o.strip())
    for origin in origins:
        if origin != "*":
            try:
                parse_origin(origin)
            except ValueError as exc:
                raise click.BadParameter(str(exc), param_hint="--cors-origin") from None
    return origins


cli.add_command(send)
cli.add_command(get)
cli.add_command(ls)
cli.add_command(rm)


def main() -> None:
    cli()
