"""128 transfers at once, every protocol mixed: all complete, every stored file is intact.

Sizes are random in the scale's range (1-2 MiB short, 1-4 MiB full); the figures are the wall
time from the first request to the last answer, the server's peak RSS (psutil, sampled every
50 ms) and the slowest upload.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from clients import PROTOCOLS, Endpoints
from helpers import MiB
from runner import corrupt_files, make_jobs, peak_rss, random_sizes
from scale import Results, Scale

DEADLINE = 240.0


def test_concurrent_mixed_transfers(
    server_factory: Any, client_run: Any, tmp_path: Path, scale: Scale, chaos_results: Results
) -> None:
    server = server_factory(data_dir=tmp_path / "data", args=["--tcp-port", "0"]).start()
    tcp_port = _tcp_port(server)
    sizes = random_sizes(scale.concurrent, *scale.concurrent_sizes, seed=128)
    jobs = make_jobs(tmp_path / "src", PROTOCOLS, sizes)
    endpoints = Endpoints(server.url, f"tcp://127.0.0.1:{tcp_port}", server.url)

    rss = peak_rss(server.pid)
    run = client_run(jobs, endpoints, attempts=5, read_timeout=60.0)
    deadline = time.monotonic() + DEADLINE
    while not run.wait(0.05) and time.monotonic() < deadline:
        rss = peak_rss(server.pid, rss)
    wall = time.monotonic() - run.started
    assert not run.running(), f"{len(run.running())} uploads still running after {DEADLINE} s"

    failed = [f"{job.name}: {job.error}" for job in jobs if job.error]
    corrupt = corrupt_files(jobs, server.url)
    rows = []
    for protocol in PROTOCOLS:
        mine = [job for job in jobs if job.protocol == protocol]
        rows.append(
            [
                protocol,
                len(mine),
                sum(1 for job in mine if job.stored_id and not job.error),
                sum(1 for job in mine if job.name in corrupt),
                max(job.seconds for job in mine),
            ]
        )
    chaos_results.table(
        "128 concurrent transfers",
        f"{len(jobs)} uploads at once ({sum(sizes) / MiB:.0f} MiB), one server: wall time "
        f"{wall:.1f} s, server peak RSS {rss / MiB:.0f} MiB.",
        ["protocol", "uploads", "completed", "corrupt files", "slowest (s)"],
        rows,
    )
    assert not failed, failed
    assert not corrupt, corrupt
    assert rss < 512 * MiB, f"server peak RSS {rss / MiB:.0f} MiB"


def _tcp_port(server: Any) -> int:
    """The raw TCP port the server printed (``--tcp-port 0`` picks one)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for line in list(server.output_tail):
            if "tcp://" in line:
                return int(line.split("tcp://", 1)[1].split()[0].rstrip("/").rsplit(":", 1)[1])
        time.sleep(0.05)
    raise AssertionError("the server did not print its TCP address")
