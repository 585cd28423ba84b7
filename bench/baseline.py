"""Before and after in one run: freight from an older commit served beside the current tree.

Usage: ``python -m bench.run --baseline REV [--runs 5] [--size-mib 512] [--smoke]``
(``make bench BASELINE=REV``).

REV is checked out in a throwaway git worktree (:mod:`bench.worktree`) and served by the same
interpreter with that checkout's ``src`` first on ``PYTHONPATH``; the current tree is served
beside it the same way. curl drives tus PATCH and GET, and the current ``freight get`` the TCP
download, so only the server differs there; ``freight send`` (the chunk API, WebSocket, TCP,
and tus as "send tus") runs from each side's own tree, so its client CPU compares the
clients too. Each round runs every path on both servers, the order of
the two alternating from round to round (old-new, new-old, ...), so slow drifts of the machine
fall on both alike. The min-max of each side's rounds is its run-to-run noise. Writes
``baseline.json`` and ``baseline.md`` into the output directory.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from bench import baseline_report, clients
from bench.clients import ClientError, Transfer
from bench.measure import MiB, make_random_file, page_reporting_paused
from bench.model import Results, Sample, Target
from bench.peers import BENCH_DIR, Peer, start_freight
from bench.suite import Source, measure_download, measure_upload, transfer_timeout
from bench.worktree import Tree, TreeError, checkout, describe, imported_from, python_env

__all__ = ["FSYNC", "PATHS", "SIDES", "BaselineOptions", "run_baseline"]

FSYNC = "never"  # no disk sync: the server's own cost shows, not the disk's
SIDES = ("old", "new")
PATHS = ("tus PATCH", "send tus", "chunks x4", "ws", "tcp", "GET", "tcp get")
CHUNK_STREAMS = 4
DEFAULT_SIZE = 1024 * MiB
DEFAULT_RUNS = 5
SMOKE_SIZE = 1 * MiB


@dataclass(frozen=True)
class BaselineOptions:
    rev: str
    runs: int = DEFAULT_RUNS
    size: int = DEFAULT_SIZE
    smoke: bool = False
    out_dir: Path = BENCH_DIR / "results"
    work: Path = BENCH_DIR / ".scratch"
    repo: Path = BENCH_DIR.parent
    only: tuple[str, ...] = ()  # measure only the paths containing one of these

    def wanted(self, path: str) -> bool:
        return not self.only or any(part in path for part in self.only)


def target_name(path: str, side: str) -> str:
    return f"{path} [{side}]"


def log(message: str) -> None:
    print(f"[bench baseline] {message}", file=sys.stderr, flush=True)


Step = Callable[[int], Sample]


@dataclass
class Side:
    """One server under comparison and how to run each path against it once."""

    side: str
    tree: Tree
    peer: Peer
    steps: dict[str, Step]


def _upload_steps(side: str, peer: Peer, source: Source, src: Path) -> dict[str, Step]:
    timeout = transfer_timeout(source.size)
    sends: dict[str, Callable[[], Transfer]] = {
        "tus PATCH": functools.partial(clients.curl_tus, f"{peer.url}/files/", source.path, timeout)
    }
    streams = [("send tus", "tus", 1), ("chunks x4", "chunks", CHUNK_STREAMS), ("ws", "ws", 1)]
    if peer.tcp_url is not None:
        streams.append(("tcp", "tcp", 1))
    for path, protocol, count in streams:
        url = peer.tcp_url if protocol == "tcp" else peer.url
        assert url is not None
        sends[path] = functools.partial(
            clients.freight_send, url, source.path, protocol, count, timeout, src
        )
    return {
        path: functools.partial(
            measure_upload, target_name(path, side), peer=peer, source=source, action=send
        )
        for path, send in sends.items()
    }


def _download_steps(side: str, peer: Peer, source: Source, client_dir: Path) -> dict[str, Step]:
    """Store the source on ``peer`` (untimed), check it is served intact, plan the GETs."""
    timeout = transfer_timeout(source.size)
    stored = clients.curl_tus(f"{peer.url}/files/", source.path, timeout)
    upload_id = stored.location.rstrip("/").rsplit("/", 1)[-1]
    url = f"{peer.url}/files/{upload_id}"
    if (digest := clients.curl_sha256(url, timeout)) != source.sha256:
        raise ClientError(f"{peer.name} serves bytes hashing to {digest}, not the source's")
    steps: dict[str, Step] = {
        "GET": functools.partial(
            measure_download,
            target_name("GET", side),
            peer=peer,
            size=source.size,
            action=functools.partial(clients.curl_get, url, timeout),
        )
    }
    if peer.tcp_url is not None:
        output = client_dir / "download.bin"

        def fetch(tcp_url: str = f"{peer.tcp_url}/{upload_id}") -> Transfer:
            transfer = clients.freight_get(tcp_url, output, timeout)
            if transfer.sha256 != source.sha256:
                raise ClientError(f"freight get reported SHA-256 {transfer.sha256}")
            return transfer

        steps["tcp get"] = functools.partial(
            measure_download,
            target_name("tcp get", side),
            peer=peer,
            size=source.size,
            action=fetch,
            client_dir=client_dir,
        )
    return steps


def _start_side(
    stack: ExitStack,
    work: Path,
    side: str,
    tree: Tree,
    source: Source,
    wanted: Callable[[str], bool],
) -> Side:
    found = imported_from(tree.src)
    if not found.is_relative_to(tree.src):
        raise TreeError(f"the {side} tree imports freight from {found}, not from {tree.src}")
    starter = functools.partial(start_freight, fsync=FSYNC, name=f"freight-{side}", src=tree.src)
    peer = starter(work)
    stack.callback(peer.stop)
    log(f"{side}: {tree.short} ({tree.subject[:60]}) at {peer.url}")
    steps = _upload_steps(side, peer, source, tree.src)
    steps.update(_download_steps(side, peer, source, work / f"client-{side}"))
    return Side(side, tree, peer, {path: step for path, step in steps.items() if wanted(path)})


def _warm_up(sides: list[Side]) -> None:
    """One untimed pass over every path: a fresh server's first transfers run slow."""
    log("warm-up round (not counted)")
    for path in PATHS:
        for side in sides:
            if (step := side.steps.get(path)) is not None and not (sample := step(0)).ok:
                log(f"  {sample.target}: {baseline_report.describe(sample)}")


def _rounds(sides: list[Side], runs: int, results: Results) -> None:
    for run in range(1, runs + 1):
        order = sides if run % 2 else sides[::-1]
        log(f"round {run}/{runs}: {' then '.join(s.side for s in order)} on every path")
        for path in PATHS:
            for side in order:
                if (step := side.steps.get(path)) is None:
                    continue
                sample = step(run)
                results.samples.append(sample)
                log(f"  {sample.target}: {baseline_report.describe(sample)}")


def _targets(sides: list[Side], results: Results, options: BaselineOptions) -> None:
    for path in PATHS:
        for side in sides:
            name = target_name(path, side.side)
            if not options.wanted(path):
                continue
            if path not in side.steps:
                results.skipped[name] = f"the {side.side} tree serves no {path}"
                continue
            kind = "download" if "get" in path.lower() else "upload"
            server = f"freight {side.tree.short}"
            results.add_target(Target(name, kind, server, syncs="no", client=_client(path)))


def _client(path: str) -> str:
    return {
        "tus PATCH": "curl POST + PATCH -T",
        "send tus": "freight send --protocol tus (this side's)",
        "chunks x4": f"freight send --protocol chunks --parallel {CHUNK_STREAMS} (this side's)",
        "ws": "freight send --protocol ws (this side's)",
        "tcp": "freight send --protocol tcp (this side's)",
        "GET": "curl -o /dev/null",
        "tcp get": "freight get",
    }[path]


@contextmanager
def _terminate_cleanly() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so the worktree and the servers are removed."""

    def stop(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    try:
        previous = signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def _clients_from(src: Path) -> Iterator[None]:
    """The clients started while the block runs (``freight send/get``) import from ``src``."""
    before = os.environ.get("PYTHONPATH")
    os.environ.update(python_env(src))
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = before


def run_baseline(options: BaselineOptions, machine: dict[str, str]) -> Results:
    mode = "baseline smoke" if options.smoke else "baseline"
    results = Results(mode=mode, size=options.size, runs=options.runs, machine=machine)
    current = describe(options.repo)
    with _terminate_cleanly(), ExitStack() as stack:
        old = stack.enter_context(checkout(options.repo, options.rev))
        results.machine["old"] = f"{old.label} = {old.short} ({old.subject[:80]})"
        results.machine["new"] = f"{current.short} ({current.subject[:80]})"
        if not options.smoke:
            results.machine["free page reporting"] = stack.enter_context(page_reporting_paused())
        stack.enter_context(_clients_from(current.src))
        path = options.work / "sources" / "baseline-source.bin"
        log(f"writing a {options.size / MiB:g} MiB random file")
        source = Source(path, options.size, make_random_file(path, options.size, seed=1))
        stack.callback(path.unlink, missing_ok=True)
        started = time.monotonic()
        sides = [
            _start_side(stack, options.work, "old", old, source, options.wanted),
            _start_side(stack, options.work, "new", current, source, options.wanted),
        ]
        _targets(sides, results, options)
        if not options.smoke:
            _warm_up(sides)
        _rounds(sides, options.runs, results)
        log(f"{options.runs} round(s) in {time.monotonic() - started:.0f} s")
    end_load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    results.machine["load average"] = (
        f"{machine.get('load average', '?')} at the start, {end_load} at the end"
    )
    results.notes.extend(baseline_report.notes(options.smoke))
    options.out_dir.mkdir(parents=True, exist_ok=True)
    baseline_report.save(results, options.out_dir / "baseline.json")
    (options.out_dir / "baseline.md").write_text(baseline_report.render(results), encoding="utf-8")
    log(f"wrote {options.out_dir / 'baseline.md'}")
    return results
