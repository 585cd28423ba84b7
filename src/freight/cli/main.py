"""Entry point of the ``freight`` command.

Each command's module is imported only when that command runs (or help lists it): a
server process never loads the client library and its terminal rendering, which cost it
5 MiB of memory (measured), and a client never loads the server.
"""

from __future__ import annotations

import importlib

import click

__all__ = ["cli", "main"]

# Command name -> "module:attribute" of its click command, in the order help lists them.
COMMANDS = {
    "send": "freight.cli.send:send",
    "get": "freight.cli.transfer:get",
    "ls": "freight.cli.files:ls",
    "rm": "freight.cli.files:rm",
    "serve": "freight.cli.serve:serve",
    "user": "freight.cli.users:user",
}


class LazyGroup(click.Group):
    """A group whose commands are imported when first asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, _, name = target.partition(":")
        command = getattr(importlib.import_module(module), name)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=LazyGroup)
@click.version_option(package_name="freight")
def cli() -> None:
    """Move files larger than RAM between machines: resumable, durable, fast."""


def main() -> None:
    cli()
