"""``freight get`` (and the result lines of ``freight send``): resumable transfers."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import click
from rich.text import Text

from freight.cli.columns import human_size
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
from freight.cli.render import (
    TransferBar,
    print_json,
    print_lines,
    run_command,
    visible,
)
from freight.client import DownloadInfo, DownloadResult, UploadResult, download_file
from freight.client.files import resolve_file_url
from freight.client.options import TransferOptions
from freight.client.stream_download import download_to_stream
from freight.client.tcp import download_tcp

__all__ = ["get", "report_upload"]


@click.command()
@click.argument("url")
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    help="File to write, or a directory to put it in, or - for stdout. Default: the name "
    "the server gives.",
)
@click.option("-f", "--force", is_flag=True, help="Replace an existing file of the same name.")
@token_option
@tls_options
@rate_option
@retries_option(10)
@stall_option
@json_option
@quiet_option
def get(
    url: str,
    output: Path | None,
    force: bool,
    token: str | None,
    retries: int,
    stall_timeout: float,
    as_json: bool,
    quiet: bool,
) -> None:
    """Download the file at URL.

    URL is a file's address on a server: http://host:port/files/ID, or tcp://host:port/ID
    for a server's raw TCP port (freight serve --tcp-port). ID may be the start of a
    stored file's id, as 'freight ls' shows it.
    Writes a hidden .OUTPUT.<hash>.freight-part beside OUTPUT and renames it once its
    SHA-256 matches the server's; running the same command again after an interruption
    resumes it, unless the file changed. An existing part file that is a link, a special
    file or another user's is never written through.
    """
    to_stdout = output is not None and str(output) == "-"
    if to_stdout and as_json:
        raise click.UsageError("-o - writes the file to stdout: there is no room for --json")
    options = transfer_options(token, retries, stall_timeout)
    started = time.monotonic()
    with TransferBar(url.rstrip("/").rsplit("/", 1)[-1], enabled=not quiet) as bar:

        def on_start(info: DownloadInfo) -> None:
            bar.start(info.size, info.resumed_from, description=info.path.name)

        # tcp:// URLs go to freight's raw TCP protocol (docs/protocol.md); the rest is HTTP.
        tcp = url.strip().lower().startswith("tcp://")
        if to_stdout and tcp:
            raise click.UsageError("-o - is for http(s) URLs")
        downloader = _download_stdout if to_stdout else download_tcp if tcp else _download_http
        result = run_command(
            downloader(
                url,
                output,
                replace(options, progress=bar.update, on_retry=bar.retrying),
                on_start=on_start,
                overwrite=force,
            )
        )
    _report_download(result, time.monotonic() - started, as_json, to_stderr=to_stdout)


async def _download_http(
    url: str, output: Path | None, options: TransferOptions, **specific: Any
) -> DownloadResult:
    # A short id is completed first; a URL naming no file (the server root) is refused.
    whole = await _resolve(url, options)
    return await download_file(whole, output, options, **specific)


async def _download_stdout(
    url: str,
    output: Path | None,
    options: TransferOptions,
    *,
    on_start: Callable[[DownloadInfo], None],
    overwrite: bool,
) -> DownloadResult:
    del output, overwrite  # the stream is the output: nothing to replace
    whole = await _resolve(url, options)
    return await download_to_stream(whole, sys.stdout.fileno(), options, on_start=on_start)


async def _resolve(url: str, options: TransferOptions) -> str:
    return await resolve_file_url(
        url, token=options.token, retry=options.retry, timeouts=options.timeouts
    )


def _rate(size: int, seconds: float) -> str:
    return f"{human_size(int(size / seconds))}/s" if seconds > 0 else "-"


def report_upload(result: UploadResult, seconds: float, as_json: bool) -> None:
    if as_json:
        print_json(
            {
                "url": result.url,
                "name": result.name,
                "size": result.size,
                "sha256": result.sha256,
                "verified": result.verified,
                "resumed_from": result.resumed_from,
                "seconds": round(seconds, 3),
            }
        )
        return
    sent = result.size - result.resumed_from
    headline = Text.assemble(
        ("Sent ", "green"),
        (visible(result.name), "bold green"),
        f" ({human_size(result.size)}) in {seconds:.1f} s, {_rate(sent, seconds)}",
        (f", resumed at {human_size(result.resumed_from)}" if result.resumed_from else ""),
        _verification(result.verified, "the server's"),
    )
    print_lines([("URL", result.url), ("SHA-256", result.sha256)], headline)


def _report_download(
    result: DownloadResult, seconds: float, as_json: bool, *, to_stderr: bool = False
) -> None:
    if as_json:
        print_json(
            {
                "path": str(result.path),
                "url": result.url,
                "size": result.size,
                "sha256": result.sha256,
                "verified": result.verified,
                "resumed_from": result.resumed_from,
                "restarted": result.restarted,
                "seconds": round(seconds, 3),
            }
        )
        return
    received = result.size - result.resumed_from
    headline = Text.assemble(
        ("Saved ", "green"),
        (visible("stdout" if to_stderr else str(result.path)), "bold green"),
        f" ({human_size(result.size)}) in {seconds:.1f} s, {_rate(received, seconds)}",
        (f", resumed at {human_size(result.resumed_from)}" if result.resumed_from else ""),
        (", restarted because the file changed on the server" if result.restarted else ""),
        _verification(result.verified, "the server's"),
    )
    print_lines([("SHA-256", result.sha256)], headline, to_stderr=to_stderr)


def _verification(verified: bool, whose: str) -> Text:
    if verified:
        return Text(f"; SHA-256 matches {whose}", style="green")
    return Text("; the server advertised no SHA-256 to check against", style="yellow")
