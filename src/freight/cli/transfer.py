"""``freight send`` and ``freight get``: resumable transfers with a progress bar."""

from __future__ import annotations

import time
from pathlib import Path

import click
from rich.text import Text

from freight.cli.options import (
    json_option,
    quiet_option,
    retries_option,
    retry_policy,
    stall_option,
    timeouts,
    tls_options,
    token_option,
)
from freight.cli.render import (
    TransferBar,
    human_size,
    print_json,
    print_lines,
    run_command,
    visible,
)
from freight.client import (
    DownloadInfo,
    DownloadResult,
    ResumeStore,
    UploadResult,
    download_file,
)
from freight.client.protocols import DEFAULT_PROTOCOL, UPLOADERS
from freight.client.tcp import download_tcp

__all__ = ["get", "send"]


@click.command()
# Not exists=True: a missing file is reported like every other failure, in one red line.
@click.argument("file", type=click.Path(path_type=Path))
@click.argument("server_url", metavar="URL")
@click.option(
    "--protocol",
    type=click.Choice(sorted(UPLOADERS)),
    default=DEFAULT_PROTOCOL,
    show_default=True,
    help="How to upload: tus (one resumable stream) or another protocol the server speaks.",
)
@click.option(
    "--parallel",
    type=click.IntRange(1, 32),
    default=4,
    show_default=True,
    help="Streams at once, for protocols that can use several.",
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
@retries_option(10)
@stall_option
@json_option
@quiet_option
def send(
    file: Path,
    server_url: str,
    protocol: str,
    parallel: int,
    chunk_size: int | None,
    token: str | None,
    retries: int,
    stall_timeout: float,
    as_json: bool,
    quiet: bool,
) -> None:
    """Upload FILE to the server at URL.

    URL is the server (http://host:port) or its tus endpoint (http://host:port/files/).
    Interrupted? Run the same command again: it resumes where the server's durable copy
    ends. Prints the file's URL and SHA-256, checked against the server's.
    """
    extra: dict[str, int] = {}
    if chunk_size is not None:
        if protocol != "chunks":
            raise click.UsageError("--chunk-size applies to --protocol chunks only")
        extra["requested_chunk_size"] = chunk_size
    started = time.monotonic()
    with TransferBar(file.name, enabled=not quiet) as bar:
        result = run_command(
            UPLOADERS[protocol](
                file,
                server_url,
                parallel=parallel,
                token=token,
                progress=bar.update,
                on_start=bar.start,
                resume_store=ResumeStore(),
                retry=retry_policy(retries),
                on_retry=bar.retrying,
                timeouts=timeouts(stall_timeout),
                **extra,
            )
        )
    _report_upload(result, time.monotonic() - started, as_json)


@click.command()
@click.argument("url")
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    help="File to write, or a directory to put it in. Default: the name the server gives.",
)
@click.option("-f", "--force", is_flag=True, help="Replace an existing file of the same name.")
@token_option
@tls_options
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
    for a server's raw TCP port (freight serve --tcp-port).
    Writes a hidden .OUTPUT.<hash>.freight-part beside OUTPUT and renames it once its
    SHA-256 matches the server's; running the same command again after an interruption
    resumes it, unless the file changed. An existing part file that is a link, a special
    file or another user's is never written through.
    """
    started = time.monotonic()
    with TransferBar(url.rstrip("/").rsplit("/", 1)[-1], enabled=not quiet) as bar:

        def on_start(info: DownloadInfo) -> None:
            bar.start(info.size, info.resumed_from, description=info.path.name)

        # tcp:// URLs go to freight's raw TCP protocol (docs/protocol.md); the rest is HTTP.
        downloader = download_tcp if url.strip().lower().startswith("tcp://") else download_file
        result = run_command(
            downloader(
                url,
                output,
                token=token,
                overwrite=force,
                progress=bar.update,
                on_start=on_start,
                resume_store=ResumeStore(),
                retry=retry_policy(retries),
                on_retry=bar.retrying,
                timeouts=timeouts(stall_timeout),
            )
        )
    _report_download(result, time.monotonic() - started, as_json)


def _rate(size: int, seconds: float) -> str:
    return f"{human_size(int(size / seconds))}/s" if seconds > 0 else "-"


def _report_upload(result: UploadResult, seconds: float, as_json: bool) -> None:
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


def _report_download(result: DownloadResult, seconds: float, as_json: bool) -> None:
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
        (visible(str(result.path)), "bold green"),
        f" ({human_size(result.size)}) in {seconds:.1f} s, {_rate(received, seconds)}",
        (f", resumed at {human_size(result.resumed_from)}" if result.resumed_from else ""),
        (", restarted because the file changed on the server" if result.restarted else ""),
        _verification(result.verified, "the server's"),
    )
    print_lines([("SHA-256", result.sha256)], headline)


def _verification(verified: bool, whose: str) -> Text:
    if verified:
        return Text(f"; SHA-256 matches {whose}", style="green")
    return Text("; the server advertised no SHA-256 to check against", style="yellow")
