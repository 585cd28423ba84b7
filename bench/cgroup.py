"""A memory-limited cgroup to run a server in, so "larger than RAM" is tested for real.

The group is made *inside* the cgroup this process already runs in (never at the top of a
hierarchy), so whatever limits and accounting the machine applies to us still apply to it.
cgroup v2 is used when its memory controller can be enabled there, else the v1 memory
controller; :class:`~bench.peers.Unavailable` says why when neither can be created.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

from bench.peers import Unavailable

__all__ = ["MemoryCgroup", "create_memory_cgroup"]


@dataclass
class MemoryCgroup:
    version: int
    path: Path
    limit: int

    @property
    def procs(self) -> Path:
        return self.path / "cgroup.procs"

    def describe(self) -> str:
        # The group's path names the host's own hierarchy; the report needs only its kind.
        return f"a cgroup v{self.version} memory group (limit {self.limit // 2**20} MiB)"

    def _read_int(self, name: str) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            return int((self.path / name).read_text().split()[0])
        return None

    def peak_bytes(self) -> int | None:
        """Most memory the group held (page cache included), where the kernel reports it."""
        return self._read_int("memory.peak" if self.version == 2 else "memory.max_usage_in_bytes")

    def oom_kills(self) -> int:
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        with contextlib.suppress(OSError):
            for line in (self.path / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        return 0

    def remove(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


def _mounts() -> list[tuple[str, Path, set[str]]]:
    found = []
    for line in Path("/proc/mounts").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[2] in ("cgroup", "cgroup2"):
            found.append((parts[2], Path(parts[1]), set(parts[3].split(","))))
    return found


def _own_path(version: int, controller: str = "memory") -> str | None:
    """Our cgroup's path in the v2 hierarchy (version 2) or the v1 ``controller`` one."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        number, controllers, path = line.split(":", 2)
        if version == 2 and number == "0" and controllers == "":
            return path
        if version == 1 and controller in controllers.split(","):
            return path
    return None


def _try_v2(name: str, limit: int) -> MemoryCgroup | str:
    mounts = [mount for kind, mount, _ in _mounts() if kind == "cgroup2"]
    own = _own_path(2)
    if not mounts or own is None:
        return "no cgroup v2 hierarchy"
    parent = mounts[0] / own.lstrip("/")
    controllers = (parent / "cgroup.controllers").read_text().split()
    if "memory" not in controllers:
        return f"cgroup v2 at {mounts[0]} has no memory controller (it is bound to v1)"
    # Enabling a controller changes our own group for everything in it: only use one that
    # is already delegated to our children.
    if "memory" not in (parent / "cgroup.subtree_control").read_text().split():
        return f"cgroup v2 group {parent} does not delegate the memory controller"
    try:
        group = parent / name
        group.mkdir()
        (group / "memory.max").write_text(str(limit))
        with contextlib.suppress(OSError):
            (group / "memory.swap.max").write_text("0")
    except OSError as exc:
        return f"cannot make a cgroup v2 memory group under {parent}: {exc}"
    return MemoryCgroup(2, group, limit)


def _try_v1(name: str, limit: int) -> MemoryCgroup | str:
    mounts = [mount for kind, mount, opts in _mounts() if kind == "cgroup" and "memory" in opts]
    own = _own_path(1)
    if not mounts or own is None:
        return "no cgroup v1 memory hierarchy"
    group = mounts[0] / own.lstrip("/") / name
    try:
        group.mkdir()
        (group / "memory.limit_in_bytes").write_text(str(limit))
    except OSError as exc:
        with contextlib.suppress(OSError):
            group.rmdir()
        return f"cannot make a cgroup v1 memory group at {group}: {exc}"
    return MemoryCgroup(1, group, limit)


def create_memory_cgroup(limit: int) -> MemoryCgroup:
    name = f"freight-bench-{os.getpid()}-{time.monotonic_ns()}"
    reasons = []
    for attempt in (_try_v2, _try_v1):
        try:
            outcome = attempt(name, limit)
        except OSError as exc:
            outcome = str(exc)
        if isinstance(outcome, MemoryCgroup):
            return outcome
        reasons.append(outcome)
    raise Unavailable("no memory cgroup could be created: " + "; ".join(reasons))
