"""How big a chaos run is, and where its figures go.

``FREIGHT_CHAOS=full`` (``make chaos``) runs more kills, bigger files and longer stalls, and
writes ``tests/chaos/results.md``; the short form (the default, part of ``make test``) is
sized to finish the whole package in about a minute on two cores and writes its figures to
``test-artifacts/chaos/results.md`` (not committed).
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

from helpers import MiB

__all__ = ["RESULTS_FULL", "Results", "Scale", "current_scale"]

ROOT = Path(__file__).resolve().parents[2]
RESULTS_FULL = ROOT / "tests" / "chaos" / "results.md"
RESULTS_SHORT = ROOT / "test-artifacts" / "chaos" / "results.md"


@dataclass(frozen=True)
class Scale:
    name: str
    kill_uploads_per_protocol: int
    kill_file_size: int
    kills: int
    kill_interval: tuple[float, float]  # seconds of uploading between a restart and a kill
    link_rate: int  # bytes/s each proxied connection forwards, so kills land mid-transfer
    cut_file_size: int
    cut_range: tuple[int, int]  # client bytes a link carries before it is cut
    stall_seconds: float
    stall_timeout: float  # the clients' read timeout: how long silence may last
    concurrent: int
    concurrent_sizes: tuple[int, int]


SHORT = Scale(
    name="short",
    kill_uploads_per_protocol=1,
    kill_file_size=16 * MiB,
    kills=3,
    kill_interval=(0.8, 1.6),
    link_rate=4 * MiB,
    cut_file_size=8 * MiB,
    cut_range=(512 * 1024, 3 * MiB),
    stall_seconds=6.0,
    stall_timeout=2.0,
    concurrent=128,
    concurrent_sizes=(MiB, 2 * MiB),
)
FULL = Scale(
    name="full",
    kill_uploads_per_protocol=4,
    kill_file_size=96 * MiB,
    kills=12,
    kill_interval=(0.5, 2.5),
    link_rate=8 * MiB,
    cut_file_size=48 * MiB,
    cut_range=(256 * 1024, 8 * MiB),
    stall_seconds=20.0,
    stall_timeout=5.0,
    concurrent=128,
    concurrent_sizes=(MiB, 4 * MiB),
)


def current_scale() -> Scale:
    return FULL if os.environ.get("FREIGHT_CHAOS", "").lower() == "full" else SHORT


@dataclass
class Results:
    """Figures each chaos test reports, written as one Markdown file at the session's end."""

    scale: Scale
    sections: dict[str, list[str]] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return RESULTS_FULL if self.scale.name == "full" else RESULTS_SHORT

    def table(self, title: str, note: str, header: list[str], rows: list[list[object]]) -> None:
        lines = [f"## {title}", "", note, ""]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        lines += ["| " + " | ".join(_cell(value) for value in row) + " |" for row in rows]
        self.sections[title] = lines

    def _command(self) -> str:
        return "make chaos" if self.scale.name == "full" else "make test"

    def write(self) -> Path | None:
        if not self.sections:
            return None
        head = [
            "# freight chaos results",
            "",
            f"Run `{self.scale.name}` ({self._command()}) on {time.strftime('%Y-%m-%d')}, "
            f"{os.cpu_count()} CPUs, Python "
            f"{platform.python_version()}, {platform.system()} {platform.release()}.",
            "Every figure is measured by `tests/chaos`; see its module docstrings for how.",
            "",
        ]
        body = [line for title in sorted(self.sections) for line in [*self.sections[title], ""]]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("\n".join(head + body))
        return self.path


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)
