"""What the benchmark measures, read from ``/proc``, and the files it measures with.

- CPU: user + system seconds of a server's whole process tree (every thread, and the
  children it has already reaped: ``utime + stime + cutime + cstime`` of ``/proc/PID/stat``),
  sampled before and after a transfer.
- Memory: ``VmHWM`` (peak resident set) of each process of the tree, reset before every
  transfer by writing ``5`` to ``/proc/PID/clear_refs`` so each run reports its own peak.
- Files: random source files (AES-CTR keystream from ``openssl``, so reproducible and cheap;
  ``os.urandom`` when openssl is missing), SHA-256 of stored copies, and the page-cache
  "first touch" warm-up: on this kind of VM the first write into never-used page-cache pages
  costs about 2 s/GiB extra, so a scratch file of the upload's size is written and deleted in
  the target's data directory before every timed upload, for every target alike. The cost
  comes from the balloon driver's free page reporting, which hands freed pages back to the
  host (a deleted scratch file included, a couple of seconds later); so the run also pauses
  it where it can (root, ``/sys/module/page_reporting``) and puts it back afterwards.
"""

from __future__ import annotations

import hashlib
import os
import resource
import shutil
import statistics
import subprocess
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "GiB",
    "MiB",
    "Spread",
    "TreeSnapshot",
    "children_cpu_seconds",
    "find_stored_copy",
    "make_random_file",
    "page_reporting_paused",
    "prewarm_page_cache",
    "process_tree",
    "reset_peak_rss",
    "sha256_of",
    "snapshot",
    "spread",
]

MiB = 1024 * 1024
GiB = 1024 * MiB
_TICKS = os.sysconf("SC_CLK_TCK")
_BLOCK = 4 * MiB


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of ``/proc/PID/stat`` after the command name (which may hold spaces)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def process_tree(root: int) -> list[int]:
    """``root`` and every live descendant of it."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    tree, pending = [], [root]
    while pending:
        pid = pending.pop()
        tree.append(pid)
        pending.extend(children.get(pid, []))
    return tree


def _cpu_seconds(pid: int) -> tuple[float, float]:
    """User and system seconds of ``pid``, its reaped children included."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0, 0.0
    # After the name: state ppid ... utime(11) stime(12) cutime(13) cstime(14), 0-based.
    user, system, child_user, child_system = (int(value) for value in fields[11:15])
    return (user + child_user) / _TICKS, (system + child_system) / _TICKS


def _status_kib(pid: int, field: str) -> int:
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return 0
    for line in lines:
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return 0


@dataclass(frozen=True)
class TreeSnapshot:
    """A server's process tree at one moment: CPU seconds, summed RSS and peak RSS.

    ``system_seconds`` is the kernel's share of ``cpu_seconds``. A server that sends with
    ``sendfile`` over loopback spends nearly all of its CPU there, much of it in the
    receiving side's network processing that the kernel runs in the sender's context, so
    comparing the two shares tells Python's overhead from the kernel's.
    """

    pids: tuple[int, ...]
    cpu_seconds: float
    rss_kib: int
    peak_rss_kib: int
    system_seconds: float = 0.0


def snapshot(root: int) -> TreeSnapshot:
    pids = tuple(process_tree(root))
    cpu = [_cpu_seconds(pid) for pid in pids]
    return TreeSnapshot(
        pids=pids,
        cpu_seconds=sum(user + system for user, system in cpu),
        system_seconds=sum(system for _, system in cpu),
        rss_kib=sum(_status_kib(pid, "VmRSS") for pid in pids),
        peak_rss_kib=sum(_status_kib(pid, "VmHWM") for pid in pids),
    )


def children_cpu_seconds() -> float:
    """User + system seconds of every child process this one has waited for so far.

    The clients are run to completion with ``subprocess.run``, so the change across one
    transfer is that transfer's client CPU (the servers, also children, are still running).
    """
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def reset_peak_rss(pids: Iterable[int]) -> bool:
    """Reset ``VmHWM`` to the current RSS (``clear_refs`` 5); False where that is refused."""
    done = True
    for pid in pids:
        try:
            Path(f"/proc/{pid}/clear_refs").write_text("5")
        except OSError:
            done = False
    return done


def make_random_file(path: Path, size: int, seed: int = 0) -> str:
    """Write ``size`` pseudo-random bytes to ``path``; return their SHA-256 (hex)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    hasher = hashlib.sha256()
    openssl = shutil.which("openssl")
    with path.open("wb") as out:
        if openssl is None:
            remaining = size
            while remaining:
                block = os.urandom(min(_BLOCK, remaining))
                hasher.update(block)
                out.write(block)
                remaining -= len(block)
        else:
            _write_keystream(openssl, out.fileno(), size, seed, hasher)
    return hasher.hexdigest()


def _write_keystream(openssl: str, fd: int, size: int, seed: int, hasher: hashlib._Hash) -> None:
    key = hashlib.sha256(f"freight-bench-{seed}".encode()).hexdigest()[:32]
    command = [openssl, "enc", "-aes-128-ctr", "-nosalt", "-K", key, "-iv", "0" * 32]
    with (
        open("/dev/zero", "rb") as zeros,
        subprocess.Popen(command, stdin=zeros, stdout=subprocess.PIPE) as proc,
    ):
        assert proc.stdout is not None
        buffer = bytearray(_BLOCK)
        view = memoryview(buffer)
        remaining = size
        while remaining:
            got = os.readv(proc.stdout.fileno(), [view[: min(_BLOCK, remaining)]])
            if not got:
                raise RuntimeError("openssl stopped before the file was complete")
            hasher.update(view[:got])
            os.write(fd, view[:got])
            remaining -= got
        proc.kill()


def sha256_of(path: Path) -> str:
    hasher = hashlib.sha256()
    buffer = bytearray(_BLOCK)
    view = memoryview(buffer)
    with path.open("rb", buffering=0) as file:
        while got := file.readinto(buffer):
            hasher.update(view[:got])
    return hasher.hexdigest()


def find_stored_copy(paths: Iterable[Path], size: int, sha256: str) -> Path | None:
    """The one of ``paths`` that has exactly ``size`` bytes hashing to ``sha256``."""
    for path in sorted(paths):
        try:
            if path.stat().st_size == size and sha256_of(path) == sha256:
                return path
        except OSError:
            continue  # a server's temporary file vanished while we looked
    return None


_PAGE_REPORTING = Path("/sys/module/page_reporting/parameters/page_reporting_order")
# Free blocks are reported from this order up; no block is this large, so none is.
_NO_REPORTING = "11"


@contextmanager
def page_reporting_paused() -> Iterator[str]:
    """Pause free page reporting for the block; yields what was done, for the report."""
    try:
        before = _PAGE_REPORTING.read_text().strip()
        _PAGE_REPORTING.write_text(_NO_REPORTING)
    except OSError as exc:
        reason = "not present" if isinstance(exc, FileNotFoundError) else f"left on ({exc})"
        yield reason
        return
    try:
        yield f"paused for the run (page_reporting_order {before} -> {_NO_REPORTING})"
    finally:
        _PAGE_REPORTING.write_text(before)


def prewarm_page_cache(directory: Path, size: int) -> None:
    """Write and delete a scratch file of ``size`` bytes in ``directory`` (see the module doc)."""
    directory.mkdir(parents=True, exist_ok=True)
    scratch = directory / ".bench-prewarm"
    block = bytes(_BLOCK)
    fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        remaining = size
        while remaining > 0:
            remaining -= os.write(fd, block[: min(_BLOCK, remaining)])
    finally:
        os.close(fd)
        scratch.unlink()


@dataclass(frozen=True)
class Spread:
    """Median with the smallest and largest of the runs."""

    median: float
    low: float
    high: float
    count: int


def spread(values: Sequence[float]) -> Spread | None:
    if not values:
        return None
    return Spread(statistics.median(values), min(values), max(values), len(values))
