"""Links that break: cut every few MiB, or stalled (open but silent) for a while.

Each protocol's client talks to the server through its own :class:`~proxy.LinkProxy`.

- **cut**: every connection is reset after a random number of client bytes in the scale's
  range; every upload must still complete with the source's SHA-256.
- **stall**: once bytes flow, every link stops forwarding (sockets kept open) for
  ``stall_seconds``; the clients' read timeout is ``stall_timeout``. **Stall detection time**
  is from the stall's start to the client's next connection; a client that waits for the
  link to come back has not detected it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from clients import PROTOCOLS, Endpoints, Job, remembered_url
from helpers import MiB
from proxy import LinkProxy
from runner import ClientRun, corrupt_files, make_jobs
from scale import Results, Scale

DEADLINE = 180.0


def start_behind_proxies(
    server_factory: Any, link_proxy: Any, tmp_path: Path, **options: object
) -> tuple[Any, dict[str, LinkProxy]]:
    """A server with a raw TCP port and one proxy per protocol in front of it."""
    server = server_factory(data_dir=tmp_path / "data", args=["--tcp-port", "0"]).start()
    tcp_port = tcp_port_of(server)
    proxies = {}
    for n, protocol in enumerate(PROTOCOLS):
        rate = options.get("rate")
        if isinstance(rate, int) and protocol == "chunks":
            options = {**options, "rate": rate // 4}  # its 4 streams share the rate
        upstream = tcp_port if protocol == "tcp" else server.port
        proxies[protocol] = link_proxy(upstream, seed=n, **options)
    return server, proxies


def run_jobs(
    client_run: Any, jobs: list[Job], server: Any, proxies: dict[str, LinkProxy], timeout: float
) -> list[ClientRun]:
    """One :class:`ClientRun` per job, each through its protocol's proxy."""
    runs = []
    for job in jobs:
        proxy = proxies[job.protocol]
        endpoints = Endpoints(
            f"http://127.0.0.1:{proxy.port}", f"tcp://127.0.0.1:{proxy.port}", server.url
        )
        runs.append(client_run([job], endpoints, attempts=60, read_timeout=timeout))
    return runs


def wait_all(runs: list[ClientRun]) -> None:
    deadline = time.monotonic() + DEADLINE
    for run in runs:
        assert run.wait(max(0.0, deadline - time.monotonic())), f"{run.jobs[0].name} is stuck"


def test_links_cut_every_few_mib(
    server_factory: Any,
    link_proxy: Any,
    client_run: Any,
    tmp_path: Path,
    scale: Scale,
    chaos_results: Results,
) -> None:
    server, proxies = start_behind_proxies(
        server_factory, link_proxy, tmp_path, cut_range=scale.cut_range
    )
    jobs = make_jobs(tmp_path / "src", PROTOCOLS, [scale.cut_file_size] * len(PROTOCOLS))
    wait_all(run_jobs(client_run, jobs, server, proxies, timeout=30.0))
    corrupt = corrupt_files(jobs, server.url)
    low, high = scale.cut_range
    chaos_results.table(
        "Links cut",
        f"Each connection is reset after {low // 1024}-{high // 1024} KiB from the client "
        f"(random); one {scale.cut_file_size // MiB} MiB upload per protocol.",
        ["protocol", "connections", "cuts", "bytes sent (MiB)", "completed", "corrupt files"],
        [
            [
                job.protocol,
                proxies[job.protocol].connections,
                proxies[job.protocol].cuts,
                proxies[job.protocol].upstream_bytes / MiB,
                int(bool(job.stored_id and not job.error)),
                int(job.name in corrupt),
            ]
            for job in jobs
        ],
    )
    assert not [job.error for job in jobs if job.error]
    assert not corrupt, corrupt
    assert all(proxy.cuts > 0 for proxy in proxies.values()), "a link was never cut"


def test_links_stall(
    server_factory: Any,
    link_proxy: Any,
    client_run: Any,
    tmp_path: Path,
    scale: Scale,
    chaos_results: Results,
) -> None:
    # Fast enough that the bytes queued in socket buffers drain well within the clients'
    # read timeout (a slower link looks stalled to them even without the stall).
    rate = 4 * scale.link_rate
    server, proxies = start_behind_proxies(server_factory, link_proxy, tmp_path, rate=rate)
    size = 2 * rate
    jobs = make_jobs(tmp_path / "src", PROTOCOLS, [size] * len(PROTOCOLS))
    runs = run_jobs(client_run, jobs, server, proxies, timeout=scale.stall_timeout)
    deadline = time.monotonic() + 30
    while not all(remembered_url(job) for job in jobs) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # bytes are flowing on every link
    frozen = {protocol: proxy.stall(scale.stall_seconds) for protocol, proxy in proxies.items()}
    wait_all(runs)
    corrupt = corrupt_files(jobs, server.url)
    detected = {
        p: (proxy.detections[0] if proxy.detections else None) for p, proxy in proxies.items()
    }
    chaos_results.table(
        "Links stalled",
        f"Every link stops forwarding for {scale.stall_seconds:.0f} s (sockets open) once "
        f"bytes flow; client read timeout {scale.stall_timeout:.0f} s; one "
        f"{size // MiB} MiB upload per protocol at {rate // MiB} MiB/s per link.",
        [
            "protocol",
            "links frozen",
            "stall detection time (s)",
            "upload time (s)",
            "completed",
            "corrupt files",
        ],
        [
            [
                job.protocol,
                frozen[job.protocol],
                "not detected" if detected[job.protocol] is None else detected[job.protocol],
                job.seconds,
                int(bool(job.stored_id and not job.error)),
                int(job.name in corrupt),
            ]
            for job in jobs
        ],
    )
    assert not [job.error for job in jobs if job.error]
    assert not corrupt, corrupt
    late = {p: t for p, t in detected.items() if t is None or t >= scale.stall_seconds}
    assert not late, f"clients that waited for the stalled link to come back: {late}"


def tcp_port_of(server: Any) -> int:
    """The raw TCP port the server printed (``--tcp-port 0`` picks one)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for line in list(server.output_tail):
            if "tcp://" in line:
                return int(line.split("tcp://", 1)[1].split()[0].rstrip("/").rsplit(":", 1)[1])
        time.sleep(0.05)
    raise AssertionError("the server did not print its TCP address")
