"""``make bench``: freight beside nginx, @tus/server, tuspyserver and the machine's limits.

Usage: ``python -m bench.run [--smoke] [--large] [--runs N] [--out-dir DIR]
[--section transfers|memory|cgroup|s3]``; ``python -m bench.run --baseline REV`` compares
the current tree with commit REV instead (:mod:`bench.baseline`).

Every target runs ``--runs`` times, interleaved (round 1 of every target, then round 2, ...),
and is reported as the median with min-max; freight's GET and tus PATCH [never] and nginx's
GET and PUT run at least :data:`HEADLINE_RUNS` rounds (the later rounds only them and the
SHA-256 ceilings). Then freight's memory is measured against file size and concurrency (a
fleet node's too, on SeaweedFS and PostgreSQL: :mod:`bench.fleet_memory`), and a freight
server inside a 128 MiB memory cgroup receives the file
through every protocol. Last, the S3 section (:mod:`bench.s3_section`) sends the file into
one SeaweedFS through a freight node, straight with aiobotocore, and through @tus/server
with @tus/s3-store. ``--smoke`` does all of it with tiny files and one round, to prove
the benchmark still works (``tests/test_bench_smoke.py``). Writes ``results.json``,
``latest.md`` and ``latest.png`` into the output directory (``bench/results``).
"""

from __future__ import annotations

import argparse
import functools
import itertools
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from bench import baseline, ceilings, clients, fleet_memory, report
from bench.ceilings import Ceiling
from bench.cgroup import create_memory_cgroup
from bench.clients import ClientError
from bench.measure import (
    GiB,
    MiB,
    make_random_file,
    page_reporting_paused,
    reset_peak_rss,
    snapshot,
)
from bench.model import Results, Sample, Target
from bench.peers import (
    BENCH_DIR,
    Peer,
    Unavailable,
    start_freight,
    start_http_server,
    start_nginx,
    start_node_tus,
    start_tuspyserver,
    which,
)
from bench.plans import FREIGHT_PROTOCOLS, FSYNC_POLICIES, NO_SHA256_PEER, Planner
from bench.report import SHA256_PAGE_CACHE, TUS_NEVER
from bench.s3_section import S3Options, run_s3_section
from bench.suite import (
    Source,
    concurrent_peak_rss,
    measure_upload,
    transfer_timeout,
)
from bench.worktree import TreeError

__all__ = ["CONCURRENT_UPLOADS", "HEADLINE_RUNS", "Options", "main", "rounds", "run_bench"]

SECTIONS = ("transfers", "memory", "cgroup", "s3")
# freight's GET and hashed tus PATCH against nginx's GET and PUT (and the SHA-256 ceilings
# they are judged with) get at least this many interleaved rounds, whatever --runs says.
HEADLINE_RUNS = 5
HEADLINE_TARGETS = ("nginx GET", "freight GET", "nginx PUT", TUS_NEVER)
CGROUP_LIMIT = 128 * MiB
CONCURRENT_UPLOADS = 16
# The peers' versions mean nothing to a comparison of freight with itself.
BASELINE_FACTS = (
    "started",
    "cpu",
    "memory",
    "kernel",
    "tcp congestion control",
    "python",
    "curl",
    "load average",
)


@dataclass(frozen=True)
class Options:
    smoke: bool = False
    large: bool = False
    runs: int = 3
    out_dir: Path = BENCH_DIR / "results"
    work_dir: Path = BENCH_DIR / ".scratch"
    keep: bool = False
    only: tuple[str, ...] = ()
    sections: tuple[str, ...] = SECTIONS
    size_override: int | None = None
    s3_part_size: int = 8 * MiB
    baseline: str | None = None

    @property
    def size(self) -> int:
        if self.size_override is not None:
            return self.size_override
        if self.smoke:
            return 1 * MiB
        if self.baseline is not None:
            return baseline.DEFAULT_SIZE
        return 4 * GiB if self.large else 1 * GiB

    @property
    def memory_sizes(self) -> tuple[int, ...]:
        if self.smoke:
            return (256 * 1024, 1 * MiB, 4 * MiB)
        return (256 * MiB, 1 * GiB, 4 * GiB)

    @property
    def concurrent_size(self) -> int:
        return 256 * 1024 if self.smoke else 64 * MiB

    @property
    def mode(self) -> str:
        return "smoke" if self.smoke else ("large" if self.large else "full")


_STARTED = time.monotonic()


def log(message: str) -> None:
    print(f"[bench {time.monotonic() - _STARTED:6.1f}s] {message}", file=sys.stderr, flush=True)


@dataclass
class Bench:
    options: Options
    work: Path
    results: Results
    peers: dict[str, Peer] = field(default_factory=dict)
    counter: Iterator[int] = field(default_factory=itertools.count)

    # --- servers ----------------------------------------------------------------------------

    def start(self, stack: ExitStack, key: str, starter: Callable[[Path], Peer]) -> Peer | None:
        return self.adopt(stack, key, _try_start(starter, self.work))

    def start_all(self, stack: ExitStack) -> None:
        """Start every server at once (they mostly wait on imports), in a stable order."""
        starters: dict[str, Callable[[Path], Peer]] = {
            "nginx": start_nginx,
            "@tus/server": start_node_tus,
            "tuspyserver": start_tuspyserver,
            "http.server": start_http_server,
        }
        for fsync in FSYNC_POLICIES:
            starters[f"freight-{fsync}"] = functools.partial(start_freight, fsync=fsync)
        starters[NO_SHA256_PEER] = functools.partial(
            start_freight,
            fsync="never",
            name=NO_SHA256_PEER,
            tcp=False,
            extra_args=("--no-sha256",),
        )
        with ThreadPoolExecutor(len(starters)) as pool:
            futures = {
                key: pool.submit(_try_start, starter, self.work)
                for key, starter in starters.items()
            }
        for key, future in futures.items():
            self.adopt(stack, key, future.result())

    def adopt(self, stack: ExitStack, key: str, outcome: Peer | Unavailable) -> Peer | None:
        if isinstance(outcome, Unavailable):
            self.results.skipped[key] = str(outcome)
            log(f"skipped {key}: {outcome}")
            return None
        stack.callback(outcome.stop)
        self.peers[key] = outcome
        log(f"started {key} at {outcome.url}")
        return outcome

    # --- rounds -----------------------------------------------------------------------------

    def wanted(self, name: str) -> bool:
        return not self.options.only or any(part in name for part in self.options.only)

    def ceiling_rounds(self, source: Source, run: int, *, headline_only: bool = False) -> None:
        size, timeout = source.size, transfer_timeout(source.size)
        ceiling_dir = self.work / "ceilings"
        measures: list[tuple[str, Callable[[], dict[str, Ceiling]]]] = [
            ("iperf3 loopback", lambda: {"": Ceiling(ceilings.iperf3_loopback(size, timeout))}),
            (
                "iperf3 loopback cubic",
                lambda: {"": Ceiling(ceilings.iperf3_loopback(size, timeout, "cubic"))},
            ),
            (
                "dd conv=fdatasync",
                lambda: {"": Ceiling(ceilings.dd_fdatasync(ceiling_dir, size, timeout))},
            ),
            ("tcp pair", lambda: ceilings.tcp_pair(source.path, ceiling_dir, timeout)),
            ("sha-256 one core", lambda: {"": ceilings.sha256_one_core(size)}),
            (SHA256_PAGE_CACHE, lambda: {"": ceilings.sha256_page_cache(source.path)}),
        ]
        for tool in ceilings.HASH_TOOLS:
            hashing = functools.partial(ceilings.hash_file, tool, source.path, timeout)
            measures.append((tool, lambda hashing=hashing: {"": hashing()}))
        for name, measure in measures:
            if not self.wanted(name) or name in self.results.skipped:
                continue
            if headline_only and not name.startswith("sha-256"):
                continue
            try:
                measured = measure()
            except (
                Unavailable,
                ClientError,
                OSError,
                RuntimeError,
                subprocess.SubprocessError,
            ) as exc:
                self.results.skipped[name] = str(exc)
                log(f"skipped {name}: {exc}")
                continue
            for suffix, ceiling in measured.items():
                full = f"{name} {suffix}".strip()
                syncs = "yes (fdatasync)" if name.startswith("dd") else "no"
                self.results.add_target(Target(full, "ceiling", name.split()[0], syncs=syncs))
                sample = Sample(full, run, size, ceiling.seconds, ceiling.cpu_seconds)
                self.results.samples.append(sample)
                log(f"  {full}: {describe(sample)}")

    def transfers(self, source: Source) -> None:
        planner = Planner(self.peers, self.results, self.work)
        plans = planner.upload_plans(source) + planner.download_plans(source)
        plans = [p for p in plans if self.wanted(p.target.name)]
        for plan in plans:
            self.results.add_target(plan.target)
        schedule = rounds(self.options.runs, smoke=self.options.smoke)
        for run, extra in schedule:
            planned = [p for p in plans if not extra or p.target.name in HEADLINE_TARGETS]
            log(f"round {run}/{len(schedule)}: {len(planned)} targets")
            for plan in planned:
                sample = plan.run_once(run)
                self.results.samples.append(sample)
                log(f"  {plan.target.name}: {describe(sample)}")
            self.ceiling_rounds(source, run, headline_only=extra)

    # --- memory -----------------------------------------------------------------------------

    def source(self, size: int, seed: int) -> Source:
        path = self.work / "sources" / f"source-{size}-{seed}.bin"
        if path.exists():
            path.unlink()
        log(f"writing a {size / MiB:.1f} MiB random file")
        return Source(path, size, make_random_file(path, size, seed))

    def memory_scaling(self, stack: ExitStack, main: Source) -> None:
        starter = functools.partial(start_freight, fsync="batch", name="freight-memory")
        peer = self.start(stack, "freight-memory", starter)
        if peer is None:
            return
        fleet = self.fleet_node(stack)
        for index, size in enumerate(self.options.memory_sizes):
            source = main if size == main.size else self.source(size, seed=10 + index)
            send = functools.partial(
                clients.curl_tus, f"{peer.url}/files/", source.path, transfer_timeout(size)
            )
            idle = snapshot(peer.pid).rss_kib
            sample = measure_upload(f"memory {size}", 1, peer, source, send)
            self.results.memory.append(
                {
                    "label": f"one upload of {size} B",
                    "size": size,
                    "uploads": 1,
                    "idle_rss_kib": idle,
                    **_sample_fields(sample),
                }
            )
            log(f"  memory, {size} B: {describe(sample)}")
            if fleet is not None:
                row = fleet_memory.measure_fleet_upload(fleet, source)
                self.results.fleet_memory.append(row)
                log(f"  memory, {size} B through a fleet node: {fleet_memory.describe(row)}")
            if source is not main:
                source.path.unlink()
        small = self.source(self.options.concurrent_size, seed=20)
        row = concurrent_peak_rss(peer, small, CONCURRENT_UPLOADS)
        self.results.memory.append(row)
        log(f"  memory, {row['label']}: peak {int(str(row['peak_rss_kib'])) / 1024:.1f} MiB")
        small.path.unlink()

    def fleet_node(self, stack: ExitStack) -> fleet_memory.FleetNode | None:
        """A node on SeaweedFS and PostgreSQL that the memory section also measures."""
        try:
            fleet = fleet_memory.start_fleet_node(stack, self.work, self.options.s3_part_size)
        except Unavailable as exc:
            self.results.skipped[fleet_memory.NAME] = str(exc)
            log(f"skipped {fleet_memory.NAME}: {exc}")
            return None
        log(f"started {fleet_memory.NAME} at {fleet.node.url}")
        return fleet

    # --- larger than RAM --------------------------------------------------------------------

    def cgroup_uploads(self, stack: ExitStack, source: Source) -> None:
        try:
            group = create_memory_cgroup(CGROUP_LIMIT)
        except Unavailable as exc:
            self.results.skipped["cgroup"] = str(exc)
            log(f"skipped the cgroup test: {exc}")
            return
        stack.callback(group.remove)
        self.results.cgroup = {"group": group.describe(), "limit": group.limit, "uploads": []}
        starter = functools.partial(
            start_freight, fsync="batch", name="freight-cgroup", cgroup_procs=group.procs
        )
        peer = self.start(stack, "freight-cgroup", starter)
        if peer is None:
            return
        rows = []
        planner = Planner(self.peers, self.results, self.work)
        for plan in planner.freight_upload_plans(peer, "batch", source):
            label = plan.target.name.replace("freight ", "").replace(" [batch]", "")
            reset_peak_rss(peer.pids())
            sample = plan.run_once(1)
            rows.append({"protocol": label, **_sample_fields(sample)})
            log(f"  cgroup, {label}: {describe(sample)}")
        for label, _, _ in FREIGHT_PROTOCOLS:
            if f"freight {label} [batch]" in self.results.skipped:
                reason = self.results.skipped[f"freight {label} [batch]"]
                rows.append({"protocol": label, "ok": None, "error": f"skipped: {reason}"})
        peer.stop()
        self.results.cgroup.update(
            uploads=rows, peak_bytes=group.peak_bytes(), oom_kills=group.oom_kills()
        )


def rounds(runs: int, *, smoke: bool) -> list[tuple[int, bool]]:
    """Each round's number and whether only the headline targets run in it."""
    total = runs if smoke else max(runs, HEADLINE_RUNS)
    return [(run, run > runs) for run in range(1, total + 1)]


def _try_start(starter: Callable[[Path], Peer], work: Path) -> Peer | Unavailable:
    try:
        return starter(work)
    except Unavailable as exc:
        return exc


def _sample_fields(sample: Sample) -> dict[str, object]:
    fields = asdict(sample)
    fields.pop("target")
    fields.pop("run")
    fields["gib_per_s"] = sample.gib_per_s
    return fields


def describe(sample: Sample) -> str:
    if not sample.ok:
        return f"FAILED {sample.error}"
    rate = sample.gib_per_s or 0.0
    cpu = sample.cpu_per_gib if sample.cpu_per_gib is not None else float("nan")
    rss = (sample.peak_rss_kib or 0) / 1024
    system = sample.system_cpu_per_gib
    kernel = f" ({system:.2f} system)" if system is not None else ""
    return f"{rate:.2f} GiB/s, CPU {cpu:.2f}{kernel} s/GiB, RSS {rss:.1f} MiB"


def machine_facts() -> dict[str, str]:
    def first_line(command: list[str]) -> str:
        try:
            out = subprocess.run(command, capture_output=True, text=True, timeout=20, check=False)
        except (OSError, subprocess.SubprocessError):
            return "not installed"
        text = (out.stdout or out.stderr).strip()
        return text.splitlines()[0] if text else ""

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    memory = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
    return {
        "started": time.strftime("%Y-%m-%d %H:%M %Z"),
        "cpu": f"{os.cpu_count()} x {cpu}",
        "memory": f"{int(memory) / 2**20:.1f} GiB",
        "kernel": platform.release(),
        "tcp congestion control": _congestion_control(),
        "python": platform.python_version(),
        "freight": first_line(
            ["git", "-C", str(BENCH_DIR.parent), "describe", "--always", "--dirty"]
        ),
        "nginx": first_line([which("nginx") or "nginx", "-v"]).replace("nginx version: ", ""),
        "node": first_line(["node", "--version"]),
        "curl": " ".join(first_line(["curl", "--version"]).split()[:2]),
        "iperf3": " ".join(first_line(["iperf3", "--version"]).split()[:2]),
        "load average": _load(),
    }


def _congestion_control() -> str:
    """The system's TCP congestion control: the peers' connections use it, and freight's
    same-host ones too unless it paces (``freight.same_host``)."""
    try:
        return Path("/proc/sys/net/ipv4/tcp_congestion_control").read_text().strip()
    except OSError:
        return "unknown"


def _load() -> str:
    """The 1, 5 and 15 minute load averages: a busy machine makes every figure worse."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


@contextmanager
def work_directory(options: Options) -> Iterator[Path]:
    options.work_dir.mkdir(parents=True, exist_ok=True)
    work = options.work_dir / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    work.mkdir()
    try:
        yield work
    finally:
        if not options.keep:
            shutil.rmtree(work, ignore_errors=True)


def run_bench(options: Options) -> Results:
    results = Results(mode=options.mode, size=options.size, runs=options.runs)
    results.machine = machine_facts()
    log(f"{options.mode} run: {options.size / MiB:.0f} MiB file, {options.runs} round(s)")
    if not options.smoke and float(_load().split()[0]) > 1.5:
        log(f"warning: load average {_load()}: other work will slow every target down")
    with work_directory(options) as work, ExitStack() as stack:
        if not options.smoke:  # tiny files gain nothing from it; leave the machine alone
            reporting = stack.enter_context(page_reporting_paused())
            results.machine["free page reporting"] = reporting
        bench = Bench(options, work, results)
        source = bench.source(options.size, seed=1)
        if "transfers" in options.sections:
            bench.start_all(stack)
            bench.transfers(source)
        if "memory" in options.sections:
            bench.memory_scaling(stack, source)
        if "cgroup" in options.sections:
            bench.cgroup_uploads(stack, source)
        if "s3" in options.sections:
            s3_options = S3Options(options.runs, part_size=options.s3_part_size, only=options.only)
            run_s3_section(results, work, source, s3_options, log)
    results.machine["load average"] += f" at the start, {_load()} at the end"
    results.notes.extend(report.method_notes(options.smoke))
    options.out_dir.mkdir(parents=True, exist_ok=True)
    results.save(options.out_dir / "results.json")
    report.write(results, options.out_dir)
    log(f"wrote {options.out_dir / 'latest.md'}")
    return results


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny files, one round")
    parser.add_argument("--large", action="store_true", help="a 4 GiB file instead of 1 GiB")
    parser.add_argument("--runs", type=int, help="rounds per target (default 3, smoke 1)")
    parser.add_argument("--out-dir", type=Path, default=BENCH_DIR / "results")
    parser.add_argument("--work-dir", type=Path, default=BENCH_DIR / ".scratch")
    parser.add_argument("--size-mib", type=int, help="file size in MiB (overrides the mode's)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--only", action="append", default=[], help="targets containing this")
    parser.add_argument(
        "--baseline",
        metavar="REV",
        help="instead: freight at git revision REV beside the current tree, path by path",
    )
    parser.add_argument(
        "--section",
        action="append",
        choices=SECTIONS,
        help="run only these sections (default: all)",
    )
    parser.add_argument(
        "--s3-part-mib", type=int, default=8, help="S3 part size of the s3 section (MiB, >= 5)"
    )
    args = parser.parse_args(argv)
    default_runs = baseline.DEFAULT_RUNS if args.baseline else 3
    runs = args.runs if args.runs is not None else (1 if args.smoke else default_runs)
    if runs < 1:
        parser.error("--runs must be at least 1")
    if args.s3_part_mib < 5:
        parser.error("--s3-part-mib must be at least 5 (S3's smallest part)")
    return Options(
        smoke=args.smoke,
        large=args.large,
        runs=runs,
        out_dir=args.out_dir,
        work_dir=args.work_dir,
        keep=args.keep,
        only=tuple(args.only),
        sections=tuple(args.section or SECTIONS),
        size_override=args.size_mib * MiB if args.size_mib else None,
        s3_part_size=args.s3_part_mib * MiB,
        baseline=args.baseline,
    )


def run_baseline(options: Options) -> Results:
    assert options.baseline is not None
    wanted = baseline.BaselineOptions(
        options.baseline,
        options.runs,
        options.size,
        options.smoke,
        options.out_dir,
        only=options.only,
    )
    facts = {k: v for k, v in machine_facts().items() if k in BASELINE_FACTS}
    with work_directory(options) as work:
        return baseline.run_baseline(replace(wanted, work=work), facts)


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    if options.baseline is not None:
        try:
            results = run_baseline(options)
        except (TreeError, Unavailable, ClientError) as exc:
            log(f"the baseline comparison could not run: {exc}")
            return 2
    else:
        results = run_bench(options)
    failed = results.failures()
    for sample in failed:
        log(f"FAILED {sample.target} (run {sample.run}): {sample.error}")
    failed_cgroup = [row for row in results.cgroup.get("uploads", []) if row.get("ok") is False]
    failed_fleet = [row for row in results.fleet_memory if row.get("ok") is False]
    for row in failed_fleet:
        log(f"FAILED {fleet_memory.NAME} ({row['size']} B): {row.get('error')}")
    return 1 if failed or failed_cgroup or failed_fleet else 0


def _exit_on_sigterm() -> None:
    # `timeout` and service managers stop a run with SIGTERM: unwinding as on Ctrl-C stops
    # the peers, SeaweedFS and PostgreSQL it started instead of leaving them running.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


if __name__ == "__main__":
    _exit_on_sigterm()
    sys.exit(main())
