"""``freight user``: the users, quotas and tokens of a server, edited where it keeps them.

Works on the server's data directory (``--data-dir``, as ``freight serve``) or a fleet's
database (``--db postgresql://...``), while the server runs or not. The server reads them
on every request: a revoked token is refused from its next request on.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from freight.cli.render import CommandError, human_size, print_json
from freight.errors import FreightError

__all__ = ["parse_duration", "parse_size", "user"]

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

_POWERS = {"": 0, "K": 1, "M": 2, "G": 3, "T": 4, "P": 5}
_SIZE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(?:([KMGTP])(I)?)?B?\s*", re.IGNORECASE)
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"\s*([0-9]+)\s*([smhdw]?)\s*", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``500G`` → bytes. Units are binary, as freight shows sizes and as ``--limit-rate``
    reads them (500G = 500 GiB; ``GiB`` is the same). ValueError if it is no size."""
    match = _SIZE.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a size (like 500G, 20MiB or 1048576)")
    number, unit, _ = match.groups()
    return int(float(number) * 1024 ** _POWERS[(unit or "").upper()])


def parse_duration(text: str) -> int:
    """``30d`` → seconds (s, m, h, d, w; a bare number is seconds)."""
    match = _DURATION.fullmatch(text)
    if match is None or int(match.group(1)) <= 0:
        raise ValueError(f"{text!r} is not a duration (like 90m, 12h, 30d)")
    return int(match.group(1)) * _SECONDS[(match.group(2) or "s").lower()]


def _size_option(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    try:
        return None if value is None else parse_size(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _duration_option(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    try:
        return None if value is None else parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def store_options(function: F) -> F:
    function = click.option(
        "--db",
        envvar="FREIGHT_DB",
        show_envvar=True,
        help="A fleet's PostgreSQL database (postgresql://...) instead of --data-dir.",
    )(function)
    return click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        envvar="FREIGHT_DATA_DIR",
        show_envvar=True,
        default=Path("freight-data"),
        show_default=True,
        help="The server's data directory (its freight.db keeps the users).",
    )(function)


def _run(data_dir: Path, db: str | None, work: Callable[[Any], Awaitable[T]]) -> T:
    """Run ``work`` on the user store; a failure is one red line and exit status 1."""
    from freight.server.user_admin import user_store

    async def run() -> T:
        async with user_store(data_dir, db) as users:
            return await work(users)

    try:
        return asyncio.run(run())
    except FreightError as exc:
        raise CommandError(exc.message) from None
    except OSError as exc:
        raise CommandError(f"cannot use {data_dir}: {exc.strerror or exc}") from None


def _when(moment: float | None) -> str:
    if moment is None:
        return "never"
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _quota(used: int, quota: int | None, shown: Callable[[int], str]) -> str:
    return f"{shown(used)} of {shown(quota)}" if quota is not None else f"{shown(used)}"


@click.group()
def user() -> None:
    """Users, their quotas and tokens (a household NAS: one account each)."""


@user.command("add")
@click.argument("name")
@click.option("--quota", callback=_size_option, help="Byte quota, like 500G (= 500 GiB) or 1.5T.")
@click.option("--max-files", type=click.IntRange(min=0), help="How many files the user may keep.")
@click.option("--admin", is_flag=True, help="May see and delete every user's files.")
@store_options
def add(
    name: str,
    quota: int | None,
    max_files: int | None,
    admin: bool,
    data_dir: Path,
    db: str | None,
) -> None:
    """Add user NAME (then give them a token: `freight user token NAME`)."""
    from freight.server.user_admin import add_user

    _run(
        data_dir,
        db,
        lambda users: add_user(users, name, byte_quota=quota, file_quota=max_files, admin=admin),
    )
    click.echo(f"Added user {name}")


@user.command("list")
@store_options
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
def list_(data_dir: Path, db: str | None, as_json: bool) -> None:
    """List users with their usage against quota."""
    from freight.server.user_admin import list_users

    rows = _run(data_dir, db, list_users)
    if as_json:
        print_json(
            {
                "users": [
                    {
                        "name": row.user.name,
                        "admin": row.user.admin,
                        "quota": {"bytes": row.user.byte_quota, "files": row.user.file_quota},
                        "usage": {"bytes": row.usage.bytes, "files": row.usage.files},
                        "tokens": row.tokens,
                    }
                    for row in rows
                ]
            }
        )
        return
    for row in rows:
        role = " (admin)" if row.user.admin else ""
        space = _quota(row.usage.bytes, row.user.byte_quota, human_size)
        files = _quota(row.usage.files, row.user.file_quota, str)
        click.echo(f"{row.user.name}{role}: {space}, {files} files, {row.tokens} tokens")


@user.command("token")
@click.argument("name")
@click.option("--expires", callback=_duration_option, help="Lifetime, like 12h or 30d.")
@click.option("--read-only", is_flag=True, help="May list and download, never write.")
@click.option("--rotate", is_flag=True, help="Issue a new token and revoke all the others.")
@click.option("--list", "show_list", is_flag=True, help="List the user's tokens instead.")
@click.option("--revoke", "revoke_id", metavar="ID", help="Revoke the token with this id.")
@store_options
def token(
    name: str,
    expires: int | None,
    read_only: bool,
    rotate: bool,
    show_list: bool,
    revoke_id: str | None,
    data_dir: Path,
    db: str | None,
) -> None:
    """Issue a token for user NAME (shown once; only its hash is kept), or list, rotate
    or revoke their tokens. Changes count from the server's next request on."""
    from freight.server.user_admin import issue, revoke, tokens_of

    if show_list:
        for record in _run(data_dir, db, lambda users: tokens_of(users, name)):
            flags = " read-only" if record.read_only else ""
            expired = " (expired)" if record.expired(time.time()) else ""
            click.echo(
                f"{record.id}  created {_when(record.created)}, expires"
                f" {_when(record.expires)}{expired}{flags}"
            )
        return
    if revoke_id is not None:
        _run(data_dir, db, lambda users: revoke(users, name, revoke_id))
        click.echo(f"Revoked token {revoke_id}")
        return
    issued = _run(
        data_dir,
        db,
        lambda users: issue(users, name, lifetime=expires, read_only=read_only, rotate=rotate),
    )
    click.echo(issued.plain)


@user.command("rm")
@click.argument("name")
@store_options
def rm(name: str, data_dir: Path, db: str | None) -> None:
    """Remove user NAME and their tokens (their files stay; admins still see them)."""
    from freight.server.user_admin import remove_user

    _run(data_dir, db, lambda users: remove_user(users, name))
    click.echo(f"Removed user {name}")
