"""``freight ls`` and ``freight rm``: the files stored on a server."""

from __future__ import annotations

import click
from rich.text import Text

from freight.cli.options import (
    json_option,
    retries_option,
    retry_policy,
    tls_options,
    token_option,
)
from freight.cli.render import (
    one_line,
    print_files_table,
    print_json,
    run_command,
    stderr_console,
    visible,
)
from freight.cli.users_render import usage_line
from freight.client import RemoteFile, delete_file, list_files
from freight.client.account import fetch_account

__all__ = ["ls", "rm"]


@click.command()
@click.argument("server_url", metavar="URL")
@token_option
@tls_options
@retries_option(2)
@json_option
def ls(server_url: str, token: str | None, retries: int, as_json: bool) -> None:
    """List the files stored on the server at URL.

    Shows each file's name, size, SHA-256 and creation time, and its id when the terminal is
    wide enough; --json gives every field, including each file's URL.
    """
    files = run_command(
        list_files(
            server_url,
            token=token,
            retry=retry_policy(retries),
            on_retry=lambda notice: stderr_console().print(
                Text(one_line(f"{notice.reason}; retrying in {notice.delay:.1f} s"), "yellow")
            ),
        )
    )
    if as_json:
        print_json({"files": [_file_json(item) for item in files]})
    else:
        print_files_table(files)
        account = run_command(fetch_account(server_url, token=token))
        if account is not None:
            click.echo(usage_line(account))


@click.command()
@click.argument("url")
@click.argument("file_id", metavar="[ID]", required=False)
@token_option
@tls_options
@retries_option(2)
@json_option
def rm(url: str, file_id: str | None, token: str | None, retries: int, as_json: bool) -> None:
    """Delete a stored file.

    Name it by its URL (`freight rm http://host:port/files/ID`) or by server URL and id
    (`freight rm http://host:port ID`).
    """
    deleted = run_command(delete_file(url, file_id, token=token, retry=retry_policy(retries)))
    if as_json:
        print_json({"deleted": deleted})
    else:
        click.echo(f"Deleted {visible(deleted)}")


def _file_json(item: RemoteFile) -> dict[str, object]:
    return {
        "id": item.id,
        "name": item.name,
        "size": item.size,
        "sha256": item.sha256,
        "created": item.created.isoformat() if item.created else None,
        "url": item.url,
    }
