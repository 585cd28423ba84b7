"""``freight send``: files, directory trees or stdin, resumable, skipping what is there."""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from freight.cli.options import (
    json_option,
    quiet_option,
    rate_option,
    retries_option,
    stall_option,
    tls_options,
    token_option,
    transfer_options,
)
from freight.cli.render import CommandError, TransferBar, print_json, print_lines, run_command
from freight.cli.send_view import BatchView, SingleView, outcome_line, print_summary
from freight.cli.transfer import report_upload
from freight.client.batch import Outcome, SendItem, collect_files, send_files
from freight.client.options import TransferOptions
from freight.client.protocols import DEFAULT_PROTOCOL, UPLOADERS
from freight.client.stdin_upload import upload_stream

__all__ = ["send"]


@click.command()
@click.argument("paths", metavar="PATH...", nargs=-1, required=True)
@click.argument("server_url", metavar="URL")
@click.option(
    "--protocol",
    type=click.Choice(sorted(UPLOADERS)),
    default=None,
    help=f"How to upload: {DEFAULT_PROTOCOL} (one resumable stream, the default) or another "
    "protocol the server speaks; tcp for a tcp://host:port URL.",
)
@click.option(
    "--parallel",
    type=click.IntRange(1, 32),
    default=4,
    show_default=True,
    help="Streams at once per file, for protocols that can use several.",
)
@click.option(
    "--transfers",
    type=click.IntRange(1, 32),
    default=2,
    show_default=True,
    help="Files sent at once.",
)
@click.option(
    "--exclude",
    multiple=True,
    metavar="GLOB",
    help="Leave out files and directories whose name or relative path matches GLOB "
    "('*.tmp', '.git', 'build/*'); may be given several times.",
)
@click.option("-f", "--force", is_flag=True, help="Send even the files the server has already.")
@click.option(
    "--name",
    help="The file name to give what is read from stdin (PATH -).",
)
@click.option(
    "--chunk-size",
    type=click.IntRange(min=1),
    default=None,
    help="Bytes per chunk to ask the server for (--protocol chunks only; the server clamps "
    "it to its limits, 256 KiB to 64 MiB by default). Smaller chunks cross a link that "
    "drops connections more often than a whole chunk takes to send.",
)
@token_option
@tls_options
@rate_option
@retries_option(10)
@stall_option
@json_option
@quiet_option
def send(
    paths: tuple[str, ...],
    server_url: str,
    protocol: str | None,
    parallel: int,
    transfers: int,
    exclude: tuple[str, ...],
    force: bool,
    name: str | None,
    chunk_size: int | None,
    token: str | None,
    retries: int,
    stall_timeout: float,
    as_json: bool,
    quiet: bool,
) -> None:
    """Upload files and directories to the server at URL.

    URL is the server (http://host:port), its tus endpoint (http://host:port/files/) or,
    for its raw TCP port, tcp://host:port. A directory is sent with everything in it, each
    file with its path relative to the directory. A file the server has already (same size
    and SHA-256) is skipped unless --force (not over tcp://, which has no such question).
    Interrupted? Run the same command again: each file resumes where the server's durable
    copy ends. Exits non-zero if any file failed.

    PATH - reads the file from stdin (give it a --name): `tar c dir | freight send - URL
    --name dir.tar`. Its length is declared at its end (tus Upload-Defer-Length).
    """
    tcp = server_url.strip().lower().startswith("tcp://")
    if protocol is None:
        protocol = "tcp" if tcp else DEFAULT_PROTOCOL
    # The question "do you have it?" is asked over HTTP, which a tcp:// URL does not name.
    force = force or tcp
    options = transfer_options(token, retries, stall_timeout)
    if "-" in paths:
        _send_stdin(paths, server_url, protocol, name, quiet, as_json, options)
        return
    if name is not None:
        raise click.UsageError("--name is for a stream (send - URL --name NAME)")
    specific: dict[str, Any] = {"parallel": parallel}
    if chunk_size is not None:
        if protocol != "chunks":
            raise click.UsageError("--chunk-size applies to --protocol chunks only")
        specific["requested_chunk_size"] = chunk_size
    collected = collect_files([Path(path) for path in paths], exclude)
    single = len(paths) == 1 and not collected.problems and not Path(paths[0]).is_dir()
    if single and len(collected.items) == 1:
        _send_single(
            collected.items[0],
            server_url,
            protocol,
            force,
            quiet,
            as_json,
            options,
            specific,
        )
        return
    if len(paths) == 1 and collected.problems:
        raise CommandError(f"{collected.problems[0][0]}: {collected.problems[0][1]}")
    if not collected.items and not collected.problems:
        raise CommandError("nothing to send: no files there (or every one excluded)")
    started = time.monotonic()
    with BatchView(collected.items, enabled=not quiet) as view:
        for path, why in collected.problems:
            view.finished(_problem(path, why))
        outcomes = run_command(
            send_files(
                collected.items,
                server_url,
                UPLOADERS[protocol],
                view,
                options,
                transfers=transfers,
                force=force,
                with_metadata=True,
                **specific,
            )
        )
    outcomes = [_problem(path, why) for path, why in collected.problems] + outcomes
    seconds = time.monotonic() - started
    if as_json:
        print_json(_batch_json(outcomes, seconds))
    else:
        print_summary(outcomes, seconds)
    if any(outcome.status == "failed" for outcome in outcomes):
        raise click.exceptions.Exit(1)


def _send_single(
    item: SendItem,
    server_url: str,
    protocol: str,
    force: bool,
    quiet: bool,
    as_json: bool,
    options: TransferOptions,
    specific: dict[str, Any],
) -> None:
    started = time.monotonic()
    with TransferBar(item.path.name, enabled=not quiet) as bar:
        (outcome,) = run_command(
            send_files(
                [item],
                server_url,
                UPLOADERS[protocol],
                SingleView(bar),
                options,
                force=force,
                **specific,
            )
        )
    seconds = time.monotonic() - started
    if outcome.status == "failed":
        raise CommandError(outcome.error or "failed")
    if outcome.status == "sent":
        assert outcome.result is not None
        report_upload(outcome.result, seconds, as_json)
        return
    existing = outcome.existing
    assert existing is not None
    if as_json:
        print_json(_outcome_json(outcome))
        return
    line, _ = outcome_line(outcome)
    print_lines([("URL", existing.url), ("SHA-256", existing.sha256 or "-")], None)
    click.echo(line, err=True)


def _send_stdin(
    paths: tuple[str, ...],
    server_url: str,
    protocol: str,
    name: str | None,
    quiet: bool,
    as_json: bool,
    options: TransferOptions,
) -> None:
    if len(paths) != 1:
        raise click.UsageError("- (stdin) is sent on its own, without other paths")
    if not name:
        raise click.UsageError("a stream has no name: give one with --name")
    if protocol != "tus":
        raise click.UsageError("a stream of unknown length is sent over tus only")
    started = time.monotonic()
    with TransferBar(name, enabled=not quiet) as bar:
        result = run_command(
            upload_stream(
                sys.stdin.fileno(),
                server_url,
                name,
                replace(options, progress=bar.update, on_retry=bar.retrying),
                on_start=lambda size, offset: bar.start(None, offset),
            )
        )
    report_upload(result, time.monotonic() - started, as_json)


def _problem(path: str, why: str) -> Outcome:
    return Outcome(SendItem(Path(path), path, 0), "failed", error=why)


def _outcome_json(outcome: Outcome) -> dict[str, object]:
    entry: dict[str, object] = {
        "path": str(outcome.item.path),
        "name": outcome.item.relative,
        "status": outcome.status,
        "size": outcome.item.size,
    }
    if outcome.result is not None:
        entry.update(
            url=outcome.result.url,
            sha256=outcome.result.sha256,
            verified=outcome.result.verified,
            resumed_from=outcome.result.resumed_from,
        )
    if outcome.existing is not None:
        entry.update(url=outcome.existing.url, sha256=outcome.existing.sha256, skipped=True)
    if outcome.error is not None:
        entry["error"] = outcome.error
    entry["seconds"] = round(outcome.seconds, 3)
    return entry


def _batch_json(outcomes: list[Outcome], seconds: float) -> dict[str, object]:
    count = {status: 0 for status in ("sent", "skipped", "failed")}
    for outcome in outcomes:
        count[outcome.status] += 1
    return {"files": [_outcome_json(o) for o in outcomes], **count, "seconds": round(seconds, 3)}
