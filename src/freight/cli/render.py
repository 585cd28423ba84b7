"""Everything the CLI shows: progress bars, result lines, tables and the one-line errors.

Results go to stdout (plain JSON with ``--json``); progress, retry notices and errors go to
stderr, so ``freight get URL --json | jq`` stays parseable. Progress bars are drawn only when
stderr is a terminal.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import unicodedata
from collections.abc import Coroutine, Iterable
from types import TracebackType
from typing import IO, Any, TypeVar

import aiohttp
import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
)
from rich.table import Table
from rich.text import Text

from freight.cli.columns import EtaColumn, SizeColumn, SpeedColumn, human_size
from freight.client import RemoteFile, RetryNotice
from freight.client.files import short_ids
from freight.client.http import describe_error
from freight.errors import FreightError

__all__ = [
    "CommandError",
    "CommandInterrupted",
    "TransferBar",
    "human_size",
    "print_error",
    "print_files_table",
    "print_json",
    "print_lines",
    "run_command",
    "stderr_console",
    "transfer_progress",
    "visible",
]

T = TypeVar("T")
INTERRUPTED_EXIT = 130  # what a shell reports for SIGINT
_TABLE_WITH_TIMES = 100  # terminal columns for a creation time beside the rest
_TABLE_WITH_DIGESTS = 160  # ... and for whole SHA-256s
_SHORT_DIGEST = 12


def stderr_console() -> Console:
    # soft_wrap: an error stays on one line even when it is wider than the terminal.
    return Console(stderr=True, highlight=False, soft_wrap=True)


# Characters that reorder or hide text around them: shown escaped, like control characters.
_INVISIBLE = frozenset("\u061c\u200e\u200f\u2028\u2029") | frozenset(
    chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))
)


def visible(text: str) -> str:
    """``text`` safe to print: control and bidi characters appear escaped (``\\x1b``).

    File names, URLs and server messages come from the server, so from anyone who could
    upload: printed raw, an escape sequence could retitle or clear the terminal and a CR or
    LF could forge lines. Everything shown goes through here and is printed as a rich
    :class:`Text` (never markup), so ``[link=...]`` stays literal too.
    """
    return "".join(_escaped(char) for char in text)


def _escaped(char: str) -> str:
    if char in _INVISIBLE or unicodedata.category(char) in ("Cc", "Cs"):
        code = ord(char)
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    return char


def one_line(text: str) -> str:
    """Collapse whitespace, newlines included: errors are always exactly one line."""
    return visible(" ".join(text.split())) or "unknown error"


def print_error(message: str) -> None:
    stderr_console().print(Text(f"Error: {one_line(message)}", style="bold red"))


class CommandError(click.ClickException):
    """A failure shown as one red ``Error: ...`` line on stderr; exit status 1."""

    def show(self, file: IO[Any] | None = None) -> None:
        print_error(self.message)


class CommandInterrupted(click.ClickException):
    """Ctrl-C: said once the progress display is gone, so on a line of its own."""

    exit_code = INTERRUPTED_EXIT

    def __init__(self) -> None:
        super().__init__("Interrupted. Run the same command again to resume.")

    def show(self, file: IO[Any] | None = None) -> None:
        console = stderr_console()
        if console.is_terminal:
            console.file.write("\n")  # the terminal's ^C is left on the line it was typed on
        console.print(Text(self.message, style="yellow"))


def run_command(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a client coroutine, turning every expected failure into a :class:`CommandError`.

    Set ``FREIGHT_DEBUG=1`` for debug logs on stderr and the traceback of an unexpected
    exception instead of its one-line summary.
    """
    if os.environ.get("FREIGHT_DEBUG"):
        logging.basicConfig(level=logging.DEBUG, format="%(name)s: %(message)s")
    try:
        return asyncio.run(coroutine)
    except KeyboardInterrupt:
        raise CommandInterrupted from None
    except FreightError as exc:
        raise CommandError(exc.message) from None
    except aiohttp.ClientError as exc:  # before OSError: some are (a TLS refusal is)
        raise CommandError(describe_error(exc)) from None
    except OSError as exc:
        raise CommandError(_describe_os_error(exc)) from None
    except Exception as exc:
        if os.environ.get("FREIGHT_DEBUG"):
            raise
        raise CommandError(f"unexpected {type(exc).__name__}: {exc}") from None


def _describe_os_error(exc: OSError) -> str:
    if exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    return str(exc)


def transfer_progress(console: Console) -> Progress:
    """The progress display of transfers: one line per task, name first."""
    return Progress(
        # Not markup: the description is a file name, maybe the server's.
        TextColumn("{task.description}", markup=False, style="bold"),
        BarColumn(),
        TaskProgressColumn(),
        SizeColumn(),
        SpeedColumn(),
        EtaColumn(),
        console=console,
    )


class TransferBar:
    """A rich progress bar for one transfer, created when the total becomes known.

    ``update`` takes the absolute number of bytes done (it may move back after a retry);
    ``note`` prints a line above the bar (or plainly on stderr when there is no bar).
    """

    def __init__(self, description: str, *, enabled: bool = True) -> None:
        self._console = stderr_console()
        self._description = visible(description)
        self._enabled = enabled and self._console.is_terminal
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self.total: int | None = None

    def __enter__(self) -> TransferBar:
        if self._enabled:
            self._progress = transfer_progress(self._console)
            self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()

    def start(self, total: int | None, done: int = 0, description: str | None = None) -> None:
        """(Re)start the bar at ``done`` of ``total`` bytes (None: unknown, as for a stream);
        the jump does not count as speed."""
        self.total = total
        self._description = visible(description or self._description)
        if self._progress is None:
            return
        if self._task is not None:
            self._progress.remove_task(self._task)
        self._task = self._progress.add_task(self._description, total=total, completed=done)

    def update(self, done: int) -> None:
        if self._progress is None:
            return
        if self._task is None:
            self.start(self.total, done)
        else:
            self._progress.update(self._task, completed=done, retrying=False)

    def note(self, message: str, style: str = "yellow") -> None:
        console = self._progress.console if self._progress is not None else self._console
        console.print(Text(one_line(message), style=style))

    def retrying(self, notice: RetryNotice) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, retrying=True)
        self.note(
            f"{notice.reason}; retrying in {notice.delay:.1f} s "
            f"(attempt {notice.attempt} of {notice.attempts})"
        )


def print_json(data: object) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False))


def print_lines(
    lines: Iterable[tuple[str, str]], headline: Text | None = None, *, to_stderr: bool = False
) -> None:
    """``label: value`` lines on stdout (stderr when stdout carries a file), labels aligned."""
    pairs = list(lines)
    console = Console(highlight=False, soft_wrap=True, stderr=to_stderr)
    if headline is not None:
        console.print(headline)
    width = max((len(label) for label, _ in pairs), default=0)
    for label, value in pairs:
        console.print(Text.assemble((f"{label + ':':<{width + 1}} ", "bold"), visible(value)))


def print_files_table(files: list[RemoteFile]) -> None:
    """A table of stored files, fitted to the terminal.

    The id column holds each id's shortest unique prefix (``get`` and ``rm`` take it), at
    every width and when piped; narrower terminals get shortened SHA-256s, then no creation
    time (``--json`` has everything).
    """
    console = Console(highlight=False)
    if not files:
        console.print("No files stored.")
        return
    full_digest = console.width >= _TABLE_WITH_DIGESTS
    show_times = console.width >= _TABLE_WITH_TIMES
    prefixes = short_ids([item.id for item in files])
    table = Table(show_edge=False, header_style="bold")
    # Ids are what `get` and `rm` take: never cut or fold them.
    width = max(len(visible(prefix)) for prefix in prefixes.values())
    table.add_column("ID", no_wrap=True, min_width=width)
    table.add_column("Name", overflow="fold")
    table.add_column("Size", justify="right", no_wrap=True)
    table.add_column("SHA-256", no_wrap=True)
    if show_times:
        table.add_column("Created", no_wrap=True)
    for item in files:
        digest = item.sha256 or "-"
        if not full_digest and len(digest) > _SHORT_DIGEST:
            digest = digest[:_SHORT_DIGEST] + "…"
        created = item.created.astimezone().strftime("%Y-%m-%d %H:%M") if item.created else "-"
        # Text cells, not strings: a string cell would be read as rich markup.
        cells = [prefixes[item.id], visible(item.name), human_size(item.size), visible(digest)]
        cells = [visible(cells[0]), *cells[1:]] + ([created] if show_times else [])
        table.add_row(*(Text(cell) for cell in cells))
    console.print(table)
