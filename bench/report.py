"""Turning :class:`~bench.model.Results` into ``latest.md`` (tables) and ``latest.png`` (chart).

``python -m bench.report results.json OUT_DIR`` renders a saved run again.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import fleet_memory
from bench.client_cpu import client_cpu_section
from bench.measure import GiB, MiB, Spread, spread
from bench.model import Results
from bench.s3_section import DIRECT, FREIGHT, SECTION, TUS_S3

__all__ = ["Goal", "evaluate_goals", "method_notes", "render_markdown", "write"]

TUS_NEVER = "freight tus PATCH [never]"
SHA256_CEILING = "sha-256 one core"
SHA256_PAGE_CACHE = "sha-256 one core from page cache"
TUS_NO_SHA256 = "freight tus PATCH [never, --no-sha256]"
PEER_TUS = ("@tus/server PATCH", "tuspyserver PATCH")
S3_DIRECT_GOAL = 0.8
S3_TUS_GOAL = 1.2
RSS_LIMIT_MIB = 64.0
FLAT_MIB = 4.0


def method_notes(smoke: bool) -> list[str]:
    notes = [
        "Everything runs on one machine over loopback (127.0.0.1); client and server share "
        "its 2 cores, so a client's CPU is not free either.",
        "One neutral client for every HTTP target: curl 7.88 streaming the file from disk "
        "(`curl -T FILE`; for tus servers one untimed POST, then one timed `PATCH -T FILE` of "
        "the whole file); downloads with `curl -o /dev/null`. Times are curl's `time_total`. "
        "freight's chunk, WebSocket and TCP paths use `freight send`/`freight get`, which "
        "also SHA-256 what they send or receive; their time is the command's own `seconds`.",
        "Before every timed upload a scratch file of the upload's size is written and "
        "deleted in the server's data directory: on this VM the first write into "
        "never-touched page-cache pages costs about 2 s/GiB, and every target gets the same "
        "warm-up. Downloads are served from the page cache.",
        "Server CPU is user+sys seconds of the server's whole process tree from "
        "/proc/PID/stat (threads and reaped children included), per GiB moved. freight "
        "answers a tus PATCH that completes an upload once its bytes are stored and may "
        "settle the SHA-256 after: its time ends at the answer, but its CPU is read once a "
        "plain HEAD of the file answers 200 (the upload finished), so that tail counts and "
        "the next round starts after it. Peak RSS is "
        "the sum of VmHWM over the server's processes, reset (clear_refs 5) before each run. "
        "results.json also gives each run's system (kernel) share of it.",
        "Congestion control: the run records the system's (`tcp congestion control` above). "
        "Where it is BBR, which paces every send with a timer per burst when there is no fq "
        "queueing discipline (loopback has none), freight gives connections whose two ends "
        "are this host a congestion control that does not pace (cubic): its listeners on "
        "127.0.0.1, its clients and its S3 client (`freight.same_host`). nginx, curl, "
        "iperf3 and the other peers keep the system's; 'iperf3 loopback cubic' is the same "
        "transfer unpaced. Most of freight GET's lead over nginx GET comes from this: with "
        "the system set to cubic for everyone (measured once, not this machine's default) "
        "nginx GET ran 4.23 GiB/s at 0.07 server CPU-s/GiB and freight GET 5.05 at 0.04, "
        "while nginx PUT rose to 2.2-2.6 GiB/s, beyond the one-core SHA-256 that bounds "
        "freight's hashed upload (1.71) and level with its unhashed one (2.10).",
        "Over loopback a download's server CPU is nearly all kernel time, much of it the "
        "receiving side's TCP processing, which the kernel runs in whichever context sends "
        "the segment: the sender's when it transmits as it writes, the client's when "
        "segments leave as the client's acknowledgements make room. So it moves between "
        "server and client with the send buffer: freight asks a larger one for a long range "
        "where the system allows it. For downloads, compare server + client CPU as well.",
        "Client CPU is the client process's user+sys seconds (getrusage of waited-for "
        "children), per GiB; for `freight send`/`freight get` it includes starting Python "
        "and importing freight (about 0.3 s). Client and server share the 2 cores, so a "
        "costly client slows its own target.",
        "Integrity: after each upload the new file in the server's data directory is "
        "SHA-256-checked against the source; each download server's bytes are checked once "
        "before the timed runs.",
        "Rounds are interleaved (every target once, then again); tables give the median "
        "with min-max. nginx GET and PUT, freight GET and tus PATCH [never] and the SHA-256 "
        "ceilings run at least 5 rounds; rounds past --runs run only them.",
        "Durability: nginx (WebDAV PUT), @tus/server (@tus/file-store) and tuspyserver "
        "never fsync received bytes; freight syncs per its --fsync setting.",
        "nginx: 1 worker, sendfile on with tcp_nopush (TCP_CORK) and its default "
        "sendfile_max_chunk (2 MiB), an autotuned send buffer, client_body_buffer_size 1m, "
        "body temp files on the "
        "same filesystem as the root (a PUT is a rename). tuspyserver: its default "
        "filesystem store under uvicorn (uvloop + httptools when installed). @tus/server "
        "2.4 with @tus/file-store 2.1 as in its README.",
        "S3 section: one SeaweedFS (`weed mini`, loopback) and one PostgreSQL (fsync=off) for "
        "the section, a bucket per target, the same part size for all three. freight: "
        "`freight serve --store s3://... --db ... --part-size P` (its default --fsync batch: "
        "a part goes to the bucket once complete, progress is recorded once a part, the "
        "request's tail is stored at its end), by tus PATCH "
        "and by `freight send --protocol chunks --parallel 4`. Direct: "
        "`python -m bench.s3_client put`, an aiobotocore multipart upload with a few parts in "
        "flight; its time and CPU are its own, from CreateMultipartUpload to "
        "CompleteMultipartUpload. @tus/server 2.4 with @tus/s3-store 2.0 (parts staged in "
        "its TMPDIR, no object tags). freight and aiobotocore sign no payload and send no "
        "default checksums over plain HTTP; the AWS SDK under @tus/s3-store is set the same "
        "way. freight sends each part's CRC-32 (`x-amz-checksum-crc32`, which SeaweedFS "
        "verifies) and sends parts from its spool with sendfile. A tus upload is complete "
        "when the PATCH is answered; each upload's object is "
        "then read back from the bucket and its SHA-256 compared with the source's. "
        "SeaweedFS CPU is its whole process tree's, per GiB, during the timed transfer.",
    ]
    if smoke:
        notes.insert(0, "SMOKE RUN: tiny files and one round; figures mean nothing.")
    return notes


def _ratio(results: Results, name: str, other: str) -> float | None:
    ours, theirs = results.throughput(name), results.throughput(other)
    if ours is None or theirs is None or not theirs.median:
        return None
    return ours.median / theirs.median


@dataclass(frozen=True)
class Goal:
    goal: str
    measured: str
    met: bool | None  # None: could not be measured in this run


def _goal_ratio(results: Results, goal: str, name: str, other: str, wanted: float) -> Goal:
    ratio = _ratio(results, name, other)
    if ratio is None:
        return Goal(goal, f"not measured ({name} or {other} missing)", None)
    return Goal(goal, f"{ratio:.2f}x", ratio >= wanted)


def _goal_cpu(results: Results, goal: str, name: str, other: str) -> Goal:
    ours, theirs = results.cpu_per_gib(name), results.cpu_per_gib(other)
    if ours is None or theirs is None:
        return Goal(goal, f"not measured ({name} or {other} missing)", None)
    return Goal(
        goal, f"{ours.median:.2f} vs {theirs.median:.2f} s/GiB", ours.median <= theirs.median
    )


def hash_overhead(results: Results, name: str) -> Spread | None:
    """Server CPU per GiB of ``name`` less the one-core SHA-256 of the stored file, round by
    round (both measured in the same round)."""
    hashing = {s.run: s.cpu_per_gib for s in results.samples_of(SHA256_PAGE_CACHE)}
    return spread(
        [
            cpu - sha
            for s in results.samples_of(name)
            if (cpu := s.cpu_per_gib) is not None and (sha := hashing.get(s.run)) is not None
        ]
    )


def _hash_overhead_goal(results: Results) -> Goal:
    goal = f"{TUS_NEVER} server CPU/GiB minus one-core SHA-256 <= nginx PUT's"
    ours, nginx = hash_overhead(results, TUS_NEVER), results.cpu_per_gib("nginx PUT")
    if ours is None or nginx is None:
        return Goal(goal, "not measured", None)
    return Goal(goal, f"{ours.median:.2f} vs {nginx.median:.2f} s/GiB", ours.median <= nginx.median)


def evaluate_goals(results: Results) -> list[Goal]:
    goals = [
        _goal_ratio(results, "HTTP download >= 1.0x nginx", "freight GET", "nginx GET", 1.0),
        _goal_cpu(results, "HTTP download server CPU/GiB <= nginx's", "freight GET", "nginx GET"),
        _goal_ratio(results, "tus upload [never] >= 1.0x nginx PUT", TUS_NEVER, "nginx PUT", 1.0),
        _hash_overhead_goal(results),
    ]
    peers = [(results.throughput(n), n) for n in PEER_TUS]
    measured_peers = [(s.median, n) for s, n in peers if s is not None]
    if measured_peers:
        _, fastest = max(measured_peers)
        goals.append(
            _goal_ratio(results, f"tus upload [never] >= 1.2x {fastest}", TUS_NEVER, fastest, 1.2)
        )
    ours, nginx = results.cpu_per_gib(TUS_NEVER), results.cpu_per_gib("nginx PUT")
    if ours is not None and nginx is not None:
        goals.append(
            Goal(
                "tus upload [never] server CPU/GiB <= nginx PUT's",
                f"{ours.median:.2f} vs {nginx.median:.2f} s/GiB",
                ours.median <= nginx.median,
            )
        )
    goals += _same_work_goals(results)
    goals.append(
        _goal_ratio(
            results,
            "TCP upload (SHA-256) >= 0.6x plain pair",
            "freight tcp [never]",
            "tcp pair up",
            0.6,
        )
    )
    goals.append(
        _goal_ratio(
            results, "TCP download >= 0.9x plain pair", "freight tcp get", "tcp pair down", 0.9
        )
    )
    for target in results.targets:
        if target.kind == "upload" and target.name.endswith("[batch]"):
            goals.append(
                _goal_ratio(
                    results,
                    f"{target.name} >= 0.9x durable dd",
                    target.name,
                    "dd conv=fdatasync",
                    0.9,
                )
            )
    goals.extend(_memory_goals(results))
    goals += [Goal(*goal) for goal in fleet_memory.goals(results)]
    goals += [
        _goal_ratio(
            results, f"S3: freight >= {S3_DIRECT_GOAL}x direct multipart", FREIGHT, DIRECT,
            S3_DIRECT_GOAL,
        ),
        _goal_ratio(
            results, f"S3: freight >= {S3_TUS_GOAL}x @tus/server + s3-store", FREIGHT, TUS_S3,
            S3_TUS_GOAL,
        ),
    ]  # fmt: skip
    return goals


def _same_work_goals(results: Results) -> list[Goal]:
    """The tus targets again for freight doing the peers' work: no hash, no fsync."""
    if results.throughput(TUS_NO_SHA256) is None:
        return []
    goals = [
        _goal_ratio(results, f"{TUS_NO_SHA256} >= 1.0x nginx PUT", TUS_NO_SHA256, "nginx PUT", 1.0)
    ]
    ours, nginx = results.cpu_per_gib(TUS_NO_SHA256), results.cpu_per_gib("nginx PUT")
    if ours is not None and nginx is not None:
        goals.append(
            Goal(
                f"{TUS_NO_SHA256} server CPU/GiB <= nginx PUT's",
                f"{ours.median:.2f} vs {nginx.median:.2f} s/GiB",
                ours.median <= nginx.median,
            )
        )
    return goals


def _memory_goals(results: Results) -> list[Goal]:
    goals = []
    single = [
        s.peak_rss_kib / 1024
        for s in results.samples
        if s.ok
        and s.peak_rss_kib
        and (t := results.target(s.target)) is not None
        and t.kind == "upload"
        and t.server.startswith("freight")
    ]
    single += [
        row["peak_rss_kib"] / 1024
        for row in results.memory
        if row.get("uploads") == 1 and row.get("peak_rss_kib")
    ]
    if single:
        worst = max(single)
        goals.append(
            Goal(
                f"peak RSS < {RSS_LIMIT_MIB:.0f} MiB for any single upload",
                f"max {worst:.1f} MiB",
                worst < RSS_LIMIT_MIB,
            )
        )
    rows = [r for r in results.memory if r.get("uploads") == 1 and r.get("peak_rss_kib")]
    if len(rows) >= 2:
        smallest, largest = min(rows, key=lambda r: r["size"]), max(rows, key=lambda r: r["size"])
        growth = (largest["peak_rss_kib"] - smallest["peak_rss_kib"]) / 1024
        goals.append(
            Goal(
                f"RSS flat: {_size(largest['size'])} within {FLAT_MIB:.0f} MiB of "
                f"{_size(smallest['size'])}",
                f"{growth:+.1f} MiB",
                abs(growth) <= FLAT_MIB,
            )
        )
    return goals


# --- Markdown -------------------------------------------------------------------------------


def _size(size: int) -> str:
    if size >= GiB and size % GiB == 0:
        return f"{size // GiB} GiB"
    if size >= MiB:
        return f"{size / MiB:g} MiB"
    return f"{size / 1024:g} KiB"


def _fmt(value: Spread | None, digits: int = 2) -> str:
    if value is None:
        return "-"
    if value.count == 1:
        return f"{value.median:.{digits}f}"
    return f"{value.median:.{digits}f} ({value.low:.{digits}f}-{value.high:.{digits}f})"


def _ok(results: Results, name: str) -> str:
    samples = results.samples_of(name)
    good = sum(1 for s in samples if s.ok)
    return f"{good}/{len(samples)}" + ("" if good == len(samples) else " FAILED")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _transfer_rows(results: Results, kind: str) -> list[list[str]]:
    rows = []
    for target in results.targets:
        if target.kind != kind:
            continue
        row = [target.name, target.client]
        if kind == "upload":
            row.append(target.syncs)
        row += [
            _fmt(results.throughput(target.name)),
            _fmt(results.cpu_per_gib(target.name)),
            _fmt(results.client_cpu_per_gib(target.name)),
            _fmt(results.peak_rss_mib(target.name), 1),
            _ok(results, target.name),
        ]
        rows.append(row)
    return rows


def render_markdown(results: Results, chart: str | None) -> str:
    when = results.machine.get("started", time.strftime("%Y-%m-%d %H:%M %Z"))
    facts = {k: v for k, v in results.machine.items() if k != "started"}
    lines = [
        f"# freight benchmark: {results.mode} run, {_size(results.size)} file, "
        f"{results.runs} round(s)",
        "",
        f"Run {when} on " + "; ".join(f"{k}: {v}" for k, v in facts.items()) + ".",
        "Regenerate with `make bench` (about 9 minutes; `make bench BENCH_ARGS=--large` for "
        "4 GiB; `make bench-s3` for the S3 section alone).",
        "",
    ]
    if chart:
        lines += [f"![throughput and CPU per GiB]({chart})", ""]
    ceilings = [
        [t.name, _fmt(results.throughput(t.name)), _fmt(results.cpu_per_gib(t.name)), t.syncs]
        for t in results.targets
        if t.kind == "ceiling"
    ]
    lines += ["## Machine ceilings (same run)", ""]
    header = ["ceiling", "GiB/s median (min-max)", "server-side CPU s/GiB", "syncs to disk"]
    lines += [*_table(header, ceilings), ""]
    columns = ["GiB/s median (min-max)", "server CPU s/GiB", "client CPU s/GiB"]
    columns += ["server peak RSS MiB", "intact"]
    lines += ["## Uploads", ""]
    lines += [
        *_table(["target", "client", "syncs to disk", *columns], _transfer_rows(results, "upload")),
        "",
    ]
    lines += ["## Downloads", ""]
    lines += [*_table(["target", "client", *columns], _transfer_rows(results, "download")), ""]
    goals = evaluate_goals(results)
    lines += ["## Targets (issue 5)", ""]
    verdict = {True: "met", False: "**missed**", None: "not measured"}
    lines += [
        *_table(
            ["goal", "measured", "verdict"], [[g.goal, g.measured, verdict[g.met]] for g in goals]
        ),
        "",
    ]
    lines += _hashing_section(results) + client_cpu_section(results) + _s3_section(results)
    lines += _memory_section(results) + fleet_memory.section(results)
    lines += _cgroup_section(results)
    if results.skipped:
        lines += ["## Skipped", ""]
        lines += [f"- {name}: {reason}" for name, reason in results.skipped.items()] + [""]
    lines += ["## Method", ""] + [f"- {note}" for note in results.notes] + [""]
    return "\n".join(lines)


def _hashing_section(results: Results) -> list[str]:
    """How close the hashed uploads come to the one-core SHA-256 ceiling measured here, and
    what they cost beyond the hash itself."""
    ceiling = results.throughput(SHA256_CEILING)
    if ceiling is None:
        return []
    stored = results.cpu_per_gib(SHA256_PAGE_CACHE)
    rows = []
    for target in results.targets:
        measured = results.throughput(target.name)
        if target.kind != "upload" or not target.server.startswith("freight") or not measured:
            continue
        if target.name == TUS_NO_SHA256:
            continue  # hashes nothing
        rows.append(
            [
                target.name,
                f"{measured.median:.2f}",
                f"{measured.median / ceiling.median:.2f}x",
                _fmt(results.cpu_per_gib(target.name)),
                _fmt(hash_overhead(results, target.name)),
            ]
        )
    hashing = _fmt(stored) if stored is not None else "-"
    lines = [
        "## freight's uploads beside the SHA-256 ceiling",
        "",
        f"freight keeps a running SHA-256 of every upload; one stream is hashed by one core, "
        f"which does {ceiling.median:.2f} GiB/s here ({SHA256_CEILING!r} above). "
        "None of the peers hashes what it receives. The last column is the server's CPU per "
        f"GiB less {SHA256_PAGE_CACHE!r} ({hashing} CPU-s/GiB: hashlib over the source "
        "file read back from the page cache), round by round: what the upload costs beyond "
        "hashing what it stored, to set beside nginx PUT's CPU per GiB.",
        "",
    ]
    header = ["target", "GiB/s", "of the SHA-256 ceiling", "server CPU s/GiB"]
    header.append("server CPU less SHA-256 s/GiB")
    return [*lines, *_table(header, rows), "", *_headline_section(results)]


def _headline_section(results: Results) -> list[str]:
    """freight beside nginx on the two rows issue 16 is about, ratio taken in each round."""
    pairs = (("freight GET", "nginx GET"), (TUS_NEVER, "nginx PUT"))
    rows = []
    for ours, theirs in pairs:
        if results.throughput(ours) is None or results.throughput(theirs) is None:
            continue
        rows.append(
            [
                f"{ours} / {theirs}",
                str(len(results.samples_of(ours))),
                _fmt(_paired_ratios(results, ours, theirs)),
                f"{_fmt(results.cpu_per_gib(ours))} vs {_fmt(results.cpu_per_gib(theirs))}",
            ]
        )
    if not rows:
        return []
    lines = ["## freight beside nginx, round by round", ""]
    header = ["pair", "rounds", "rate ratio median (min-max)", "server CPU s/GiB"]
    return [*lines, *_table(header, rows), ""]


def _paired_ratios(results: Results, name: str, other: str) -> Spread | None:
    """``name`` over ``other`` within each round: what the machine's load did to both."""
    theirs = {s.run: s.gib_per_s for s in results.samples_of(other)}
    ratios = [
        ours / their
        for s in results.samples_of(name)
        if (ours := s.gib_per_s) is not None and (their := theirs.get(s.run))
    ]
    return spread(ratios)


def _s3_section(results: Results) -> list[str]:
    """The uploads into SeaweedFS: freight node, direct multipart, @tus/server + s3-store."""
    lines = ["## Into S3: one SeaweedFS behind each (same run)", ""]
    if SECTION in results.skipped:
        return [*lines, f"Not run: {results.skipped[SECTION]}", ""]
    targets = [t for t in results.targets if t.kind == "s3"]
    if not targets:
        return []
    header = ["target", "client", "GiB/s median (min-max)", "server CPU s/GiB"]
    header += ["client CPU s/GiB", "SeaweedFS CPU s/GiB", "server peak RSS MiB", "intact"]
    rows = [
        [
            t.name,
            t.client,
            _fmt(results.throughput(t.name), 3),  # SeaweedFS keeps these near 0.1
            _fmt(results.cpu_per_gib(t.name)),
            _fmt(results.client_cpu_per_gib(t.name)),
            _fmt(results.store_cpu_per_gib(t.name)),
            _fmt(results.peak_rss_mib(t.name), 1),
            _ok(results, t.name),
        ]
        for t in targets
    ]
    lines += [*_table(header, rows), ""]
    for other, wanted in ((DIRECT, S3_DIRECT_GOAL), (TUS_S3, S3_TUS_GOAL)):
        ratio = _ratio(results, FREIGHT, other)
        if ratio is not None:
            paired = _fmt(_paired_ratios(results, FREIGHT, other))
            lines.append(f"- freight / {other.removeprefix('S3: ')}: {ratio:.2f}x of the "
                         f"medians, {paired} round by round (target >= {wanted}x)")  # fmt: skip
    lines.append(
        "- SeaweedFS's own CPU per GiB bounds every row on this machine: client, server and "
        "store share its cores (direct has no server: its server CPU is '-')."
    )
    return [*lines, ""]


def _memory_section(results: Results) -> list[str]:
    if not results.memory:
        return []
    rows = []
    for row in results.memory:
        rows.append(
            [
                row["label"].replace(f"{row['size']} B", _size(row["size"])),
                f"{row.get('idle_rss_kib', 0) / 1024:.1f}",
                f"{(row.get('peak_rss_kib') or 0) / 1024:.1f}",
                "ok" if row.get("ok") else f"FAILED {row.get('error', '')}",
            ]
        )
    lines = ["## freight's memory (fresh server, --fsync batch, curl tus uploads)", ""]
    return lines + _table(["case", "RSS before (MiB)", "peak RSS (MiB)", "intact"], rows) + [""]


def _cgroup_section(results: Results) -> list[str]:
    cgroup: dict[str, Any] = results.cgroup
    lines = ["## Larger than RAM: freight in a 128 MiB memory cgroup", ""]
    if "cgroup" in results.skipped:
        return [*lines, f"Not run: {results.skipped['cgroup']}", ""]
    if not cgroup:
        return []
    lines.append(
        f"Server in {cgroup['group']}, `--fsync batch`, {_size(results.size)} per "
        f"upload; group peak {(cgroup.get('peak_bytes') or 0) / MiB:.0f} MiB "
        f"(page cache included), OOM kills: {cgroup.get('oom_kills', 0)}."
    )
    lines.append("")
    rows = []
    for row in cgroup.get("uploads", []):
        status = {True: "ok", False: "FAILED", None: "skipped"}[row.get("ok")]
        rate = row.get("gib_per_s")
        rss = row.get("peak_rss_kib")
        rows.append(
            [
                row["protocol"],
                status if row.get("ok") else f"{status}: {row.get('error', '')}",
                f"{rate:.2f}" if rate else "-",
                f"{rss / 1024:.1f}" if rss else "-",
            ]
        )
    return lines + _table(["protocol", "result", "GiB/s", "server peak RSS MiB"], rows) + [""]


# --- chart ----------------------------------------------------------------------------------


def write_chart(results: Results, path: Path) -> bool:
    """Throughput and server CPU per GiB for every target; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Rectangle
    except ImportError:
        return False
    names, rates, errors, cpus, colors = [], [], [], [], []
    client_cpus: list[float] = []
    palette = {"freight": "#1f77b4", "peer": "#ff7f0e", "ceiling": "#7f7f7f"}
    for target in results.targets:
        rate = results.throughput(target.name)
        if rate is None:
            continue
        family = (
            "ceiling"
            if target.kind == "ceiling" or target.name == DIRECT
            else ("freight" if target.server.startswith("freight") else "peer")
        )
        names.append(f"{target.name} ({target.kind})" if target.kind != "ceiling" else target.name)
        rates.append(rate.median)
        errors.append((rate.median - rate.low, rate.high - rate.median))
        cpu = results.cpu_per_gib(target.name)
        cpus.append(cpu.median if cpu is not None else 0.0)
        client = results.client_cpu_per_gib(target.name)
        client_cpus.append(client.median if client is not None else 0.0)
        colors.append(palette[family])
    height = max(4.0, 0.32 * len(names) + 1.5)
    figure, (left, right) = plt.subplots(
        1, 2, figsize=(13, height), sharey=True, gridspec_kw={"width_ratios": [3, 2]}
    )
    positions = list(range(len(names)))
    left.barh(
        positions,
        rates,
        xerr=list(zip(*errors, strict=True)) if errors else None,
        color=colors,
        capsize=2,
    )
    left.set_yticks(positions, names, fontsize=8)
    left.invert_yaxis()
    left.set_xlabel("GiB/s (median, min-max)")
    left.set_title(f"Throughput, {_size(results.size)} over loopback")
    right.barh(positions, cpus, color=colors)
    right.barh(positions, client_cpus, left=cpus, color=colors, alpha=0.35, hatch="//")
    right.set_xlabel("CPU seconds per GiB (median): server, then client (hatched)")
    right.set_title("CPU per GiB (lower is better)")
    for axis in (left, right):
        axis.grid(axis="x", alpha=0.3)
    handles = [Rectangle((0, 0), 1, 1, color=c) for c in palette.values()]
    figure.legend(handles, ["freight", "peer", "machine ceiling"], loc="lower center", ncol=3)
    figure.tight_layout(rect=(0, 0.04, 1, 1))
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def write(results: Results, out_dir: Path) -> None:
    chart = out_dir / "latest.png"
    drawn = write_chart(results, chart)
    if not drawn:
        results.notes.append("No chart: matplotlib is not installed (pip install -e '.[bench]').")
    text = render_markdown(results, chart.name if drawn else None)
    (out_dir / "latest.md").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    write(Results.load(Path(sys.argv[1])), Path(sys.argv[2]))
