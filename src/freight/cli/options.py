"""Options shared by the client commands, so every command spells them the same way."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import click

from freight.client import ClientError, ResumeStore, RetryPolicy, Timeouts
from freight.client.http import tls_verify, verifying
from freight.client.options import TransferOptions
from freight.client.rate import RateLimit, limiting, parse_rate

__all__ = [
    "json_option",
    "quiet_option",
    "rate_option",
    "retries_option",
    "retry_policy",
    "stall_option",
    "tls_options",
    "token_option",
    "transfer_options",
]

F = TypeVar("F", bound=Callable[..., Any])


def token_option(function: F) -> F:
    return click.option(
        "--token",
        envvar="FREIGHT_TOKEN",
        show_envvar=True,
        help="Bearer token the server requires (sent as 'Authorization: Bearer').",
    )(function)


def json_option(function: F) -> F:
    return click.option(
        "--json", "as_json", is_flag=True, help="Print the result as JSON on stdout."
    )(function)


def quiet_option(function: F) -> F:
    return click.option(
        "-q", "--quiet", is_flag=True, help="No progress bar (it is only drawn on a terminal)."
    )(function)


def retries_option(default: int) -> Callable[[F], F]:
    def decorate(function: F) -> F:
        return click.option(
            "--retries",
            type=click.IntRange(min=0),
            default=default,
            show_default=True,
            help="Consecutive failed attempts to retry (with exponential backoff) before "
            "giving up; any progress resets the count. A server that never answered is "
            "given up on after about 10 s.",
        )(function)

    return decorate


def retry_policy(retries: int) -> RetryPolicy:
    return RetryPolicy(attempts=retries)


def stall_option(function: F) -> F:
    return click.option(
        "--stall-timeout",
        type=click.FloatRange(min=0.1),
        default=Timeouts.stall,
        show_default=True,
        help="Seconds without progress while data is owed (sending blocked, an answer or "
        "data awaited) before the connection is dropped and the transfer resumed.",
    )(function)


def transfer_options(token: str | None, retries: int, stall_timeout: float) -> TransferOptions:
    """The options of every transfer a command makes, from its flags: built once per
    command. Transfers are remembered in the default resume store, so running the same
    command again resumes them. (TLS and the rate limit are set around the whole command
    by :func:`tls_options` and :func:`rate_option`.)"""
    return TransferOptions(
        token=token,
        retry=retry_policy(retries),
        timeouts=Timeouts(stall=stall_timeout),
        resume_store=ResumeStore(),
    )


def tls_options(function: F) -> F:
    """``--cacert`` and ``--insecure``: how an https server's certificate is checked. The
    command runs with that check for every session it opens; it never sees the options."""

    @functools.wraps(function)
    def run(*args: Any, cacert: Path | None, insecure: bool, **kwargs: Any) -> Any:
        try:
            verify = tls_verify(cacert, insecure=insecure)
        except ClientError as exc:
            raise click.BadParameter(exc.message, param_hint="--cacert") from None
        with verifying(verify):
            return function(*args, **kwargs)

    decorated = click.option(
        "--insecure",
        "-k",
        is_flag=True,
        help="Do not check the server's TLS certificate (https URLs): anyone on the path "
        "can then read and change the transfer.",
    )(run)
    decorated = click.option(
        "--cacert",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        envvar="FREIGHT_CACERT",
        show_envvar=True,
        help="Trust https servers whose certificate this CA (PEM) signed, instead of the "
        "system's CAs.",
    )(decorated)
    return cast(F, decorated)


def rate_option(function: F) -> F:
    """``--limit-rate``: one token bucket for every byte the command moves."""

    @functools.wraps(function)
    def run(*args: Any, limit_rate: str | None, **kwargs: Any) -> Any:
        limit = None
        if limit_rate is not None:
            try:
                limit = RateLimit(parse_rate(limit_rate))
            except ClientError as exc:
                raise click.BadParameter(exc.message, param_hint="--limit-rate") from None
        with limiting(limit):
            return function(*args, **kwargs)

    decorated = click.option(
        "--limit-rate",
        metavar="RATE",
        help="Move at most RATE bytes per second in all (10M, 512K, 1.5MiB; K, M, G are "
        "binary), over every file and stream of the command.",
    )(run)
    return cast(F, decorated)
