"""Sizes in binary units (KiB, MiB, GiB, as the page shows them) and the progress columns
that use them; rate and time left say "retrying" while a transfer waits to retry."""

from __future__ import annotations

from rich.progress import DownloadColumn, ProgressColumn, Task, TimeRemainingColumn
from rich.text import Text

__all__ = ["RETRYING", "EtaColumn", "SizeColumn", "SpeedColumn", "human_rate", "human_size"]

RETRYING = "retrying"  # the task field set while a transfer waits to retry
_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


def human_size(size: int | float) -> str:
    """``314572800`` → ``300.0 MiB``; below 1 KiB, whole bytes."""
    if size < 1024:
        return f"{int(size)} bytes" if int(size) != 1 else "1 byte"
    value = size / 1024
    power = 0
    while value >= 1024 and power < len(_UNITS) - 1:
        value /= 1024
        power += 1
    return f"{value:.1f} {_UNITS[power]}"


def human_rate(bytes_per_second: float | None) -> str:
    return "-" if bytes_per_second is None else f"{human_size(bytes_per_second)}/s"


class SizeColumn(DownloadColumn):
    """Done and total, in binary units."""

    def __init__(self) -> None:
        super().__init__(binary_units=True)


class SpeedColumn(ProgressColumn):
    """The task's speed, or "retrying" while it waits to retry (a frozen rate would lie)."""

    def render(self, task: Task) -> Text:
        if task.fields.get(RETRYING):
            return Text(RETRYING, style="yellow")
        if task.finished or task.speed is None:
            return Text("?", style="progress.data.speed")
        return Text(human_rate(task.speed), style="progress.data.speed")


class EtaColumn(TimeRemainingColumn):
    """Time left, or "retrying" while the task waits to retry."""

    def render(self, task: Task) -> Text:
        if task.fields.get(RETRYING):
            return Text(RETRYING, style="yellow")
        return super().render(task)
