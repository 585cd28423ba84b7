"""The ``serve`` options that say where uploads are kept: one machine, or a fleet.

``--store`` alone keeps today's default (local files + SQLite, no other service). With
``--store s3://BUCKET/PREFIX`` the bytes go to an S3-compatible bucket and sessions,
claims and events to the PostgreSQL database ``--db``: every node started with the same
options serves every upload (docs/scaling.md). S3 credentials come the usual way
(``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``, or a profile).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from freight.config import ServerConfig, fleet_limits, parse_store

__all__ = ["check_store", "store_options"]

F = TypeVar("F", bound=Callable[..., Any])

DEFAULTS = ServerConfig()
MIN_PART = 5 * 1024 * 1024


def _store(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        parse_store(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


def check_store(settings: dict[str, Any]) -> None:
    """Refuse options that make no sense together, in one line, before anything starts."""
    fleet = parse_store(settings["store"]).kind == "s3"
    if fleet and not settings["db"]:
        raise click.UsageError("--store s3://... needs --db postgresql://... (sessions live there)")
    if fleet:
        try:
            settings["max_size"], settings["part_size"] = fleet_limits(
                settings["max_size"], settings["part_size"]
            )
        except ValueError as exc:
            raise click.UsageError(f"--part-size and --max-size: {exc}") from None
    if not fleet:
        for name in ("db", "s3_endpoint", "part_size", "spool_dir"):
            if settings[name] is not None:
                flag = "--" + name.replace("_", "-")
                raise click.UsageError(f"{flag} applies only with --store s3://...")
        if settings["download_redirect"]:
            raise click.UsageError("--download-redirect applies only with --store s3://...")


def store_options(function: F) -> F:
    """Every option about where uploads are kept, declared once."""
    decorators = [
        click.option(
            "--store",
            default=DEFAULTS.store,
            show_default=True,
            callback=_store,
            help="Where uploads are kept: local (files + SQLite in --data-dir), memory "
            "(lost at exit; for trials), or s3://BUCKET/PREFIX (a fleet; needs --db).",
        ),
        click.option(
            "--db",
            metavar="DSN",
            help="PostgreSQL for sessions, claims and events of a fleet "
            "(postgresql://user:password@host:port/database).",
        ),
        click.option(
            "--s3-endpoint",
            metavar="URL",
            help="The S3-compatible endpoint (default: AWS's for --s3-region).",
        ),
        click.option(
            "--s3-region", default=DEFAULTS.s3_region, show_default=True, help="The S3 region."
        ),
        click.option(
            "--part-size",
            type=click.IntRange(min=MIN_PART),
            help="Bytes per S3 part, at least 5 MiB (default: the least whole MiB, at least "
            "8 MiB, that lets 10,000 parts hold --max-size); a chunk API chunk is one part.",
        ),
        click.option(
            "--spool-dir",
            type=click.Path(file_okay=False, path_type=Path),
            help="Where a node stages bytes before they go to S3 (default: DATA_DIR/spool).",
        ),
        click.option(
            "--download-redirect",
            is_flag=True,
            help="Answer downloads with a 302 to a presigned URL of the bucket.",
        ),
    ]
    for decorate in reversed(decorators):
        function = decorate(function)
    return function
