"""The ``serve`` options for hooks (docs/hooks.md): where events go, which ones, how a
blocking hook that fails is treated, and the webhook's signing secret."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from freight.config import ServerConfig

__all__ = ["hook_options"]

F = TypeVar("F", bound=Callable[..., Any])

DEFAULTS = ServerConfig()
EVENTS = (
    "pre-create",
    "post-create",
    "post-receive",
    "pre-finish",
    "post-finish",
    "post-terminate",
    "post-expire",
)


def _events(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> Any:
    names = tuple(v.strip() for value in values for v in value.split(",") if v.strip())
    unknown = [name for name in names if name not in EVENTS]
    if unknown:
        raise click.BadParameter(f"unknown events {', '.join(unknown)}; known: {', '.join(EVENTS)}")
    return names


def _url(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    if value is not None and not value.startswith(("http://", "https://")):
        raise click.BadParameter("an http:// or https:// URL")
    return value


def hook_options(function: F) -> F:
    """Every hook option, declared once."""
    decorators = [
        click.option(
            "--hook-url",
            metavar="URL",
            callback=_url,
            help="POST hook events to this URL as JSON (signed with --hook-secret).",
        ),
        click.option(
            "--hook-cmd",
            metavar="COMMAND",
            help="Run COMMAND for each hook event with the JSON on stdin (exit status and "
            "stdout decide pre-create and pre-finish).",
        ),
        click.option(
            "--hooks",
            "hooks",
            multiple=True,
            callback=_events,
            metavar="EVENT",
            help=f"Send only these events (repeatable or comma-separated; default all): "
            f"{', '.join(EVENTS)}.",
        ),
        click.option(
            "--hook-secret",
            metavar="SECRET",
            help="Sign webhook bodies with HMAC-SHA256 under this key (Freight-Hook-Signature).",
        ),
        click.option(
            "--hook-timeout",
            type=click.FloatRange(min=0, min_open=True),
            default=DEFAULTS.hook_timeout,
            show_default=True,
            help="Seconds one hook delivery may take (a blocking pre-* hook holds its request).",
        ),
        click.option(
            "--hook-fail-open/--hook-fail-closed",
            default=DEFAULTS.hook_fail_open,
            show_default=True,
            help="When a pre-create or pre-finish hook fails (no answer, an error status): let "
            "the upload through, or refuse it with 503 (the default).",
        ),
        click.option(
            "--hook-progress-interval",
            type=click.FloatRange(min=0),
            default=DEFAULTS.hook_progress_interval,
            show_default=True,
            help="Seconds between two post-receive events of one upload, at least.",
        ),
        click.option(
            "--hook-retry-max",
            type=click.FloatRange(min=0.1),
            default=DEFAULTS.hook_retry_max,
            show_default=True,
            help="Longest wait, in seconds, between retries of a post-finish, post-terminate or "
            "post-expire event that was not delivered (they are retried until delivered).",
        ),
    ]
    for decorate in reversed(decorators):
        function = decorate(function)
    return function
