"""The before/after table of :mod:`bench.baseline`: ``baseline.md`` and ``baseline.json``.

A path is *slower* only when every round of the new tree was slower than every round of the
old one (the two min-max ranges do not overlap); overlapping ranges are within the run-to-run
noise. ``python -m bench.baseline_report baseline.json OUT_DIR`` renders a saved run again.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.measure import Spread, spread
from bench.model import Results, Sample, Target

__all__ = ["Comparison", "compare", "describe", "load", "notes", "render", "save"]

SIDES = ("old", "new")


def describe(sample: Sample) -> str:
    if not sample.ok:
        return f"FAILED {sample.error}"
    cpu = sample.cpu_per_gib if sample.cpu_per_gib is not None else float("nan")
    rss = (sample.peak_rss_kib or 0) / 1024
    return f"{sample.gib_per_s or 0.0:.2f} GiB/s, CPU {cpu:.2f} s/GiB, RSS {rss:.1f} MiB"


@dataclass(frozen=True)
class Comparison:
    """One path, old beside new."""

    path: str
    old: Spread | None
    new: Spread | None
    ratio: float | None  # median new / median old
    paired: Spread | None  # new / old of each round (the two ran back to back)
    verdict: str  # "slower", "faster", "within noise", "one round" or "not measured"
    cpu_verdict: str  # the same for server CPU per GiB: "costlier", "cheaper", ...
    old_cpu_per_gib: Spread | None
    new_cpu_per_gib: Spread | None
    old_peak_rss_mib: Spread | None
    new_peak_rss_mib: Spread | None
    intact: str


def _path_of(target: Target) -> str:
    return target.name.rsplit(" [", 1)[0]


def _verdict(old: Spread | None, new: Spread | None, lower: str, higher: str) -> str:
    """``lower``/``higher`` when every new round is below/above every old one."""
    if old is None or new is None:
        return "not measured"
    if old.count < 2 or new.count < 2:
        return "one round"
    if new.high < old.low:
        return lower
    if new.low > old.high:
        return higher
    return "within noise"


def _paired(results: Results, path: str) -> Spread | None:
    """new / old throughput round by round: a drift of the machine over minutes cancels out."""
    old = {s.run: s.gib_per_s for s in results.samples_of(f"{path} [old]")}
    ratios = [
        rate / base
        for s in results.samples_of(f"{path} [new]")
        if (rate := s.gib_per_s) is not None and (base := old.get(s.run))
    ]
    return spread(ratios)


def _throughput_verdict(old: Spread | None, new: Spread | None, paired: Spread | None) -> str:
    verdict = _verdict(old, new, "slower", "faster")
    if verdict == "within noise" and paired is not None and paired.high < 1:
        return "slower in every round"
    return verdict


def compare(results: Results) -> list[Comparison]:
    paths = list(dict.fromkeys(_path_of(t) for t in results.targets))
    rows = []
    for path in paths:
        old, new = (results.throughput(f"{path} [{side}]") for side in SIDES)
        old_cpu, new_cpu = (results.cpu_per_gib(f"{path} [{side}]") for side in SIDES)
        paired = _paired(results, path)
        samples = [s for side in SIDES for s in results.samples_of(f"{path} [{side}]")]
        good = sum(1 for s in samples if s.ok)
        rows.append(
            Comparison(
                path,
                old,
                new,
                new.median / old.median if old and new and old.median else None,
                paired,
                _throughput_verdict(old, new, paired),
                _verdict(old_cpu, new_cpu, "cheaper", "costlier"),
                old_cpu,
                new_cpu,
                results.peak_rss_mib(f"{path} [old]"),
                results.peak_rss_mib(f"{path} [new]"),
                f"{good}/{len(samples)}" + ("" if good == len(samples) else " FAILED"),
            )
        )
    return rows


def _fmt(value: Spread | None, digits: int = 2) -> str:
    if value is None:
        return "-"
    if value.count == 1:
        return f"{value.median:.{digits}f}"
    return f"{value.median:.{digits}f} ({value.low:.{digits}f}-{value.high:.{digits}f})"


def _noise(value: Spread | None) -> str:
    """The spread of the rounds relative to their median, as a percentage."""
    if value is None or value.count < 2 or not value.median:
        return "-"
    return f"{(value.high - value.low) / value.median:.0%}"


def _pair(old: Spread | None, new: Spread | None, digits: int = 2) -> str:
    return f"{_fmt(old, digits)} → {_fmt(new, digits)}"


def render(results: Results) -> str:
    facts = "; ".join(f"{k}: {v}" for k, v in results.machine.items())
    rows = compare(results)
    header = ["path", "old GiB/s median (min-max)", "new GiB/s median (min-max)", "new/old"]
    header += ["new/old per round", "noise old / new", "verdict"]
    header += ["server CPU s/GiB old → new", "CPU verdict"]
    header += ["peak RSS MiB old → new", "intact"]
    table = [
        [
            row.path,
            _fmt(row.old),
            _fmt(row.new),
            f"{row.ratio:.2f}x" if row.ratio is not None else "-",
            _fmt(row.paired),
            f"{_noise(row.old)} / {_noise(row.new)}",
            f"**{row.verdict}**" if row.verdict.startswith("slower") else row.verdict,
            _pair(row.old_cpu_per_gib, row.new_cpu_per_gib),
            "**costlier**" if row.cpu_verdict == "costlier" else row.cpu_verdict,
            _pair(row.old_peak_rss_mib, row.new_peak_rss_mib, 1),
            row.intact,
        ]
        for row in rows
    ]
    slower = [row.path for row in rows if row.verdict == "slower"]
    summary = (
        f"Slower than the old tree beyond the run-to-run noise: {', '.join(slower)}."
        if slower
        else "No path is slower than the old tree by more than the run-to-run noise."
    )
    if steady := [row.path for row in rows if row.verdict == "slower in every round"]:
        summary += f" Slower in every round, though within the noise: {', '.join(steady)}."
    if costlier := [row.path for row in rows if row.cpu_verdict == "costlier"]:
        summary += f" Server CPU per GiB up beyond the noise: {', '.join(costlier)}."
    size = f"{results.size / 2**20:g} MiB"
    rev = results.machine.get("old", "<rev>").split(" = ")[0]
    lines = [
        f"# freight before and after: {results.mode} run, {size} file, {results.runs} round(s)",
        "",
        f"{facts}.",
        "",
        f"Regenerate with `make bench BASELINE={rev}` (or `python -m bench.run --baseline {rev}`).",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
        *("| " + " | ".join(cells) + " |" for cells in table),
        "",
        summary,
        "",
    ]
    lines += _client_cpu_lines(results)
    if results.skipped:
        lines += ["## Skipped", ""]
        lines += [f"- {name}: {reason}" for name, reason in results.skipped.items()] + [""]
    lines += ["## Method", ""] + [f"- {note}" for note in results.notes] + [""]
    return "\n".join(lines)


def _client_cpu_lines(results: Results) -> list[str]:
    """Client CPU per GiB of each path's client, old → new (``freight send`` runs from each
    side's own tree, so this compares the clients; curl's rows compare nothing but curl)."""
    rows = []
    for path in dict.fromkeys(_path_of(t) for t in results.targets):
        old, new = (results.client_cpu_per_gib(f"{path} [{side}]") for side in SIDES)
        if old is None and new is None:
            continue
        target = results.target(f"{path} [new]") or results.target(f"{path} [old]")
        verdict = _verdict(old, new, "cheaper", "costlier")
        ratio = f"{new.median / old.median:.2f}x" if old and new and old.median else "-"
        client = target.client if target is not None else ""
        rows.append(f"| {path} | {client} | {_pair(old, new)} | {ratio} | {verdict} |")
    if not rows:
        return []
    return [
        "## Client CPU s/GiB, old → new",
        "",
        "| path | client | client CPU s/GiB old → new | new/old | verdict |",
        "|---|---|---|---|---|",
        *rows,
        "",
    ]


def notes(smoke: bool) -> list[str]:
    found = [
        "The old tree is a throwaway `git worktree` of the given revision; both servers run "
        "the same Python and packages, each with its own tree's `src` first on PYTHONPATH, "
        "`--fsync never`, on loopback at the same time.",
        "curl drives tus PATCH and GET and the current `freight get` the TCP download, so "
        "only the server differs there; `freight send` (send tus, the chunk API with 4 "
        "streams, WebSocket and TCP) runs from each side's own tree, so its client CPU per "
        "GiB compares the clients too.",
        "Each round runs every path on both servers back to back, the order alternating "
        "(old-new, then new-old), so a slow drift of the machine falls on both alike.",
        "Noise is the min-max spread of a side's rounds over its median. A path is slower "
        "only when the new tree's best round is below the old tree's worst; likewise its "
        "server CPU per GiB is costlier only when the ranges do not overlap. On a shared "
        "machine CPU per GiB is the steadier of the two figures.",
        "new/old per round divides the two back-to-back transfers of each round, so a drift "
        "of the machine over minutes cancels out; when it is below 1 in every round while "
        "the ranges overlap, the verdict says 'slower in every round' (with 5 rounds, "
        "chance alone does that 1 time in 32).",
        "Before the counted rounds one untimed round runs every path on both servers "
        "(a fresh server's first transfers are slow).",
        "Each timed upload is preceded by the suite's page-cache warm-up and followed by a "
        "SHA-256 check of the stored copy; the file served for GET is checked once.",
        "Server CPU is user+sys seconds of the server's process tree per GiB; peak RSS is "
        "VmHWM summed over it, reset before each transfer.",
    ]
    if smoke:
        found.insert(0, "SMOKE RUN: tiny file and one round; figures mean nothing.")
    return found


def save(results: Results, path: Path) -> None:
    """The run (loadable again) and the comparison, for machines to read."""
    comparison: list[dict[str, Any]] = [asdict(row) for row in compare(results)]
    data = {"comparison": comparison, "run": asdict(results)}
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


def load(path: Path) -> Results:
    data = json.loads(path.read_text(encoding="utf-8"))["run"]
    data["targets"] = [Target(**t) for t in data["targets"]]
    data["samples"] = [Sample(**s) for s in data["samples"]]
    return Results(**data)


if __name__ == "__main__":
    loaded = load(Path(sys.argv[1]))
    (Path(sys.argv[2]) / "baseline.md").write_text(render(loaded), encoding="utf-8")
