"""Entry point of the ``freight`` command."""

from __future__ import annotations

import click

from freight.cli.files import ls, rm
from freight.cli.serve import serve
from freight.cli.transfer import get, send

__all__ = ["cli", "main"]


@click.group()
@click.version_option(package_name="freight")
def cli() -> None:
    """Move files larger than RAM between machines: resumable, durable, fast."""


cli.add_command(send)
cli.add_command(get)
cli.add_command(ls)
cli.add_command(rm)
cli.add_command(serve)


def main() -> None:
    cli()
