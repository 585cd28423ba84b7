"""What a benchmark run produces: samples, skipped targets, notes; saved as results.json.

``bench/report.py`` renders this into the Markdown table and the chart, so a report can be
made again from a saved ``results.json`` without running anything.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.measure import GiB, Spread, spread

__all__ = ["Results", "Sample", "Target"]


@dataclass(frozen=True)
class Target:
    """Something measured: a server path, a client path or a machine ceiling."""

    name: str
    kind: str  # "upload", "download" or "ceiling"
    server: str  # which server (peer name) or tool
    syncs: str = "n/a"
    client: str = ""


@dataclass(frozen=True)
class Sample:
    """One run of one target."""

    target: str
    run: int
    size: int
    seconds: float | None = None
    cpu_seconds: float | None = None
    peak_rss_kib: int | None = None
    ok: bool = True
    error: str = ""
    client_cpu_seconds: float | None = None
    # The object store's CPU seconds (the S3 section's SeaweedFS), where there is one.
    store_cpu_seconds: float | None = None
    # The kernel's share of cpu_seconds (system time), where measured.
    system_cpu_seconds: float | None = None

    @property
    def gib_per_s(self) -> float | None:
        if not self.ok or not self.seconds:
            return None
        return self.size / self.seconds / GiB

    @property
    def cpu_per_gib(self) -> float | None:
        if not self.ok or self.cpu_seconds is None or not self.size:
            return None
        return self.cpu_seconds / (self.size / GiB)

    @property
    def system_cpu_per_gib(self) -> float | None:
        if not self.ok or self.system_cpu_seconds is None or not self.size:
            return None
        return self.system_cpu_seconds / (self.size / GiB)

    @property
    def client_cpu_per_gib(self) -> float | None:
        if not self.ok or self.client_cpu_seconds is None or not self.size:
            return None
        return self.client_cpu_seconds / (self.size / GiB)

    @property
    def store_cpu_per_gib(self) -> float | None:
        if not self.ok or self.store_cpu_seconds is None or not self.size:
            return None
        return self.store_cpu_seconds / (self.size / GiB)


@dataclass
class Results:
    """Everything one run of ``bench/run.py`` measured."""

    mode: str
    size: int
    runs: int
    machine: dict[str, str] = field(default_factory=dict)
    targets: list[Target] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # target or section -> reason
    memory: list[dict[str, Any]] = field(default_factory=list)
    fleet_memory: list[dict[str, Any]] = field(default_factory=list)  # bench.fleet_memory
    cgroup: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add_target(self, target: Target) -> None:
        if all(existing.name != target.name for existing in self.targets):
            self.targets.append(target)

    def target(self, name: str) -> Target | None:
        return next((t for t in self.targets if t.name == name), None)

    def samples_of(self, name: str) -> list[Sample]:
        return [s for s in self.samples if s.target == name]

    def throughput(self, name: str) -> Spread | None:
        return spread([v for s in self.samples_of(name) if (v := s.gib_per_s) is not None])

    def cpu_per_gib(self, name: str) -> Spread | None:
        return spread([v for s in self.samples_of(name) if (v := s.cpu_per_gib) is not None])

    def client_cpu_per_gib(self, name: str) -> Spread | None:
        samples = self.samples_of(name)
        return spread([v for s in samples if (v := s.client_cpu_per_gib) is not None])

    def store_cpu_per_gib(self, name: str) -> Spread | None:
        samples = self.samples_of(name)
        return spread([v for s in samples if (v := s.store_cpu_per_gib) is not None])

    def peak_rss_mib(self, name: str) -> Spread | None:
        values = [s.peak_rss_kib / 1024 for s in self.samples_of(name) if s.peak_rss_kib]
        return spread(values)

    def failures(self) -> list[Sample]:
        return [s for s in self.samples if not s.ok]

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=1) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> Results:
        data = json.loads(path.read_text(encoding="utf-8"))
        data["targets"] = [Target(**t) for t in data["targets"]]
        data["samples"] = [Sample(**s) for s in data["samples"]]
        return cls(**data)
