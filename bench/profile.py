"""Where a freight server spends its CPU during one transfer: py-spy, summarised.

Usage: ``python -m bench.profile [--path tus|chunks|ws|tcp|get|tcp-get] [--fsync never]
[--size-mib 1024] [--native]``

Starts a freight server, attaches ``py-spy record --threads`` to it for exactly one transfer
(the same client and warm-up as ``bench/run.py``), and writes into the output directory:

- ``profile-<path>-<fsync>.txt``: the transfer's figures, CPU samples per thread, and the
  functions that were on CPU (self) and on the stack (inclusive), largest first;
- ``profile-<path>-<fsync>.raw``: py-spy's collapsed stacks, for ``flamegraph.pl`` or
  speedscope.

py-spy shows Python frames; ``--native`` adds C frames (hashing, aiohttp's C parser, memcpy).
A sample is taken only while a thread is running, so the counts are CPU time, not waiting.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from bench import clients
from bench.clients import Transfer
from bench.measure import GiB, MiB, make_random_file, prewarm_page_cache, snapshot
from bench.peers import BENCH_DIR, Peer, Unavailable, start_freight, which
from bench.suite import Source, transfer_timeout

__all__ = ["main", "summarise"]

PATHS = ("tus", "chunks", "ws", "tcp", "get", "tcp-get")


# Samples whose stack holds one of these are a thread waiting, not working: py-spy's own idle
# test misses waits inside C (a worker blocked on its queue, the loop in epoll_wait).
WAITS = ("_queue_SimpleQueue_get", "epoll_wait", "pthread_cond_timedwait", "sem_clockwait")


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of every thread of ``pid``, by thread id."""
    ticks = os.sysconf("SC_CLK_TCK")
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            found[int(task.name)] = (int(fields[11]) + int(fields[12])) / ticks
    return found


def summarise(raw: str, top: int = 25) -> str:
    """Per-thread sample counts, then self and inclusive counts per function."""
    threads: Counter[str] = Counter()
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = waiting = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        if any(wait in stack for wait in WAITS):
            waiting += count
            continue
        frames = stack.split(";")
        thread, calls = (frames[0], frames[1:]) if frames[0].startswith("thread") else ("", frames)
        total += count
        threads[thread] += count
        if calls:
            own[calls[-1]] += count
        for frame in set(calls):
            inclusive[frame] += count
    if not total:
        return "no samples (was the server busy at all?)\n"

    def table(title: str, counter: Counter[str], limit: int) -> list[str]:
        rows = [f"{title}:"]
        rows += [f"  {n / total:6.1%}  {name}" for name, n in counter.most_common(limit)]
        return [*rows, ""]

    lines = [f"{total} samples of a thread at work ({waiting} more of one waiting, left out)", ""]
    lines += table("per thread", threads, 10)
    lines += table("self (on CPU in this function)", own, top)
    # Frames on every sample of some thread (runpy, click, the event loop) say nothing.
    inclusive = Counter({f: n for f, n in inclusive.items() if n not in threads.values()})
    lines += table("inclusive (this function on the stack)", inclusive, top)
    return "\n".join(lines)


def _thread_lines(before: dict[int, float], after: dict[int, float], raw: str) -> list[str]:
    names = dict(re.findall(r"thread \((\d+)\): ([^;]+)", raw))
    used = {tid: seconds - before.get(tid, 0.0) for tid, seconds in after.items()}
    return [
        f"  {seconds:6.2f} s  {names.get(str(tid), 'thread')} ({tid})"
        for tid, seconds in sorted(used.items(), key=lambda item: -item[1])
        if seconds > 0
    ]


def _transfer(path: str, peer: Peer, source: Source, work: Path) -> Callable[[], Transfer]:
    timeout = transfer_timeout(source.size)
    if path == "tus":
        return functools.partial(clients.curl_tus, f"{peer.url}/files/", source.path, timeout)
    if path in ("chunks", "ws", "tcp"):
        url = peer.tcp_url if path == "tcp" else peer.url
        if url is None:
            raise Unavailable("this freight has no TCP port")
        parallel = 4 if path == "chunks" else 1
        return functools.partial(clients.freight_send, url, source.path, path, parallel, timeout)
    created = clients.curl_tus(f"{peer.url}/files/", source.path, timeout)
    upload_id = created.location.rstrip("/").rsplit("/", 1)[-1]
    if path == "get":
        return functools.partial(clients.curl_get, f"{peer.url}/files/{upload_id}", timeout)
    if peer.tcp_url is None:
        raise Unavailable("this freight has no TCP port")
    output = work / "client" / "download.bin"
    output.parent.mkdir(parents=True, exist_ok=True)
    return functools.partial(clients.freight_get, f"{peer.tcp_url}/{upload_id}", output, timeout)


def profile(path: str, fsync: str, size: int, native: bool, rate: int, out_dir: Path) -> Path:
    py_spy = which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    work = BENCH_DIR / ".scratch" / f"profile-{time.strftime('%Y%m%d-%H%M%S')}"
    source_path = work / "source.bin"
    source = Source(source_path, size, make_random_file(source_path, size, seed=1))
    peer = start_freight(work, fsync)
    stem = out_dir / f"profile-{path}-{fsync}"
    try:
        send = _transfer(path, peer, source, work)
        prewarm_page_cache(peer.store_dir if path not in ("tcp-get",) else work / "client", size)
        command = [py_spy, "record", "--pid", str(peer.pid), "--threads", "--nolineno"]
        command += ["--rate", str(rate), "--format", "raw", "--output", f"{stem}.raw"]
        command += ["--native"] if native else []
        spy = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(1.0)  # py-spy attaches
        before, threads_before = snapshot(peer.pid), thread_cpu(peer.pid)
        transfer = send()
        after, threads_after = snapshot(peer.pid), thread_cpu(peer.pid)
        spy.send_signal(signal.SIGINT)
        _, errors = spy.communicate(timeout=60)
        raw = Path(f"{stem}.raw").read_text() if Path(f"{stem}.raw").exists() else ""
        cpu = after.cpu_seconds - before.cpu_seconds
        head = [
            f"freight {path} --fsync {fsync}, {size / MiB:.0f} MiB: "
            f"{size / transfer.seconds / GiB:.2f} GiB/s, server CPU {cpu:.2f} s "
            f"({cpu / (size / GiB):.2f} s/GiB), py-spy at {rate} Hz"
            + (" with native frames" if native else ""),
            "",
            "CPU seconds per thread during the transfer (from /proc/PID/task/TID/stat):",
            *_thread_lines(threads_before, threads_after, raw),
            "",
        ]
        text = "\n".join(head) + (summarise(raw) if raw else errors.decode(errors="replace"))
        Path(f"{stem}.txt").write_text(text, encoding="utf-8")
        return Path(f"{stem}.txt")
    finally:
        peer.stop()
        subprocess.run(["rm", "-rf", str(work)], check=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--path", choices=PATHS, default="tus")
    parser.add_argument("--fsync", choices=("never", "batch", "always"), default="never")
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rate", type=int, default=200)
    parser.add_argument("--native", action="store_true")
    parser.add_argument("--out-dir", type=Path, default=BENCH_DIR / "results")
    args = parser.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    report = profile(
        args.path, args.fsync, args.size_mib * MiB, args.native, args.rate, args.out_dir
    )
    print(report.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
