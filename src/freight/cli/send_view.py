"""What ``freight send`` shows: one bar for one file; for several, an overall line, a line
per file being sent (like rclone ``-P``), a line per file done, and a summary."""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import Progress, TaskID
from rich.text import Text

from freight.cli.columns import human_rate, human_size
from freight.cli.render import TransferBar, one_line, stderr_console, transfer_progress, visible
from freight.client.batch import Outcome, SendItem
from freight.client.http import RetryNotice

__all__ = ["BatchView", "SingleView", "summary_text"]


class SingleView:
    """One file: the transfer bar freight has always drawn."""

    def __init__(self, bar: TransferBar) -> None:
        self.bar = bar

    def checking(self, item: SendItem) -> None:
        del item

    def started(self, item: SendItem, size: int, offset: int) -> None:
        self.bar.start(size, offset)

    def progress(self, item: SendItem, done: int) -> None:
        self.bar.update(done)

    def retrying(self, item: SendItem, notice: RetryNotice) -> None:
        self.bar.retrying(notice)

    def finished(self, outcome: Outcome) -> None:
        del outcome


class BatchView:
    """Several files: an overall task and one task per file in flight, on stderr."""

    def __init__(self, items: list[SendItem], *, enabled: bool = True) -> None:
        self._console = stderr_console()
        self._enabled = enabled and self._console.is_terminal
        self._total = sum(item.size for item in items)
        self._done: dict[SendItem, int] = {}
        self._tasks: dict[SendItem, TaskID] = {}
        self._finished_bytes = 0
        self._progress: Progress | None = None
        self._overall: TaskID | None = None

    def __enter__(self) -> BatchView:
        if self._enabled:
            self._progress = transfer_progress(self._console)
            self._overall = self._progress.add_task("Total", total=self._total)
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

    def checking(self, item: SendItem) -> None:
        self._task(item, item.size, 0)

    def started(self, item: SendItem, size: int, offset: int) -> None:
        self._task(item, size, offset)
        self.progress(item, offset)

    def progress(self, item: SendItem, done: int) -> None:
        self._done[item] = done
        if self._progress is None:
            return
        task = self._tasks.get(item)
        if task is not None:
            self._progress.update(task, completed=done, retrying=False)
        self._update_overall(retrying=False)

    def retrying(self, item: SendItem, notice: RetryNotice) -> None:
        if self._progress is not None and item in self._tasks:
            self._progress.update(self._tasks[item], retrying=True)
            if len(self._tasks) == 1:
                self._update_overall(retrying=True)  # nothing else is moving
        self._print(
            f"{visible(item.relative)}: {notice.reason}; retrying in {notice.delay:.1f} s "
            f"(attempt {notice.attempt} of {notice.attempts})",
            "yellow",
        )

    def finished(self, outcome: Outcome) -> None:
        item = outcome.item
        self._done.pop(item, None)
        self._finished_bytes += item.size
        if self._progress is not None:
            task = self._tasks.pop(item, None)
            if task is not None:
                self._progress.remove_task(task)
            self._update_overall(retrying=False)
        line, style = outcome_line(outcome)
        self._print(line, style)

    def _task(self, item: SendItem, size: int, done: int) -> None:
        if self._progress is None:
            return
        task = self._tasks.get(item)
        if task is None:
            description = visible(item.relative)
            self._tasks[item] = self._progress.add_task(description, total=size, completed=done)
        else:
            self._progress.reset(task, total=size, completed=done)

    def _update_overall(self, *, retrying: bool) -> None:
        if self._progress is not None and self._overall is not None:
            done = self._finished_bytes + sum(self._done.values())
            self._progress.update(self._overall, completed=done, retrying=retrying)

    def _print(self, text: str, style: str) -> None:
        console = self._progress.console if self._progress is not None else self._console
        console.print(Text(one_line(text), style=style))


def outcome_line(outcome: Outcome) -> tuple[str, str]:
    """One line saying what became of a file, and its style."""
    name = outcome.item.relative
    if outcome.status == "skipped":
        where = outcome.existing.url if outcome.existing else "the server"
        return f"Skipped {name}: the server has it already ({where})", "cyan"
    if outcome.status == "failed":
        return f"Failed {name}: {outcome.error}", "bold red"
    result = outcome.result
    assert result is not None
    sent = result.size - result.resumed_from
    rate = human_rate(sent / outcome.seconds) if outcome.seconds > 0 else "-"
    resumed = f", resumed at {human_size(result.resumed_from)}" if result.resumed_from else ""
    return f"Sent {name} ({human_size(result.size)}, {rate}{resumed})", "green"


def summary_text(outcomes: list[Outcome], seconds: float) -> Text:
    sent = [o for o in outcomes if o.status == "sent"]
    skipped = sum(1 for o in outcomes if o.status == "skipped")
    failed = sum(1 for o in outcomes if o.status == "failed")
    moved = sum(o.result.size - o.result.resumed_from for o in sent if o.result is not None)
    rate = human_rate(moved / seconds) if seconds > 0 else "-"
    return Text.assemble(
        (f"{len(sent)} sent", "green"),
        f" ({human_size(moved)} in {seconds:.1f} s, {rate}), ",
        (f"{skipped} skipped", "cyan" if skipped else ""),
        ", ",
        (f"{failed} failed", "bold red" if failed else ""),
    )


def print_summary(outcomes: list[Outcome], seconds: float) -> None:
    Console(highlight=False, soft_wrap=True).print(summary_text(outcomes, seconds))
