"""SIGKILL the server again and again while every protocol uploads through resuming clients.

The clients (tus, IETF, chunks with 4 streams, WebSocket, TCP) reach the server through
rate-limited proxies, so each kill lands mid-transfer. The test polls every running upload's
offset as the server reports it (tus/IETF/WebSocket/TCP sessions: ``HEAD /files/{id}``;
chunk uploads: ``received_bytes``) every 50 ms; the last answer before a kill is what the
server had acknowledged. Halfway between kills every link is cut once, so acknowledged
offsets move even for files smaller than the server's 64 MiB checkpoint. After a kill the
proxies' gate closes (no client can write), the server is restarted on the same data
directory and every offset is read again: **acked bytes lost** is what fell below the
acknowledged figure. Then the gate opens, the clients resume, and each stored file is
downloaded and compared with its source (**corrupt files**).
(``tests/integration/test_crash_safety.py`` checks one tus upload's part file byte by byte.)
"""

from __future__ import annotations

import random
import time
import urllib.error
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clients import PROTOCOLS, Endpoints, Job, file_id, remembered_url, server_offset
from helpers import MiB, free_port
from runner import corrupt_files, make_jobs, peak_rss
from scale import Results, Scale

FINISH_DEADLINE = 240.0
FSYNC_POLICIES = ("always", "batch")


@dataclass
class Ledger:
    """What the server acknowledged, per (job, upload id), and what a restart lost of it."""

    acked: dict[tuple[str, str], int] = field(default_factory=dict)
    lost: dict[str, int] = field(default_factory=dict)  # job name -> bytes
    kills_seen: dict[str, int] = field(default_factory=dict)  # job name -> kills lived through

    def observe(self, jobs: list[Job], direct: str) -> None:
        for job in jobs:
            url = remembered_url(job)
            if url is None:
                continue
            try:
                offset = server_offset(direct, job.protocol, file_id(url), timeout=2.0)
            except (OSError, ValueError, KeyError):
                continue  # a kill or a take-over raced the question
            key = (job.name, file_id(url))
            self.acked[key] = max(offset, self.acked.get(key, 0))

    def check_after_restart(self, jobs: list[Job], direct: str) -> None:
        """Every acknowledged offset of an unfinished upload must still be there."""
        for job in jobs:
            self.kills_seen[job.name] = self.kills_seen.get(job.name, 0) + 1
            for (name, upload_id), acked in self.acked.items():
                if name != job.name:
                    continue
                try:
                    offset = server_offset(direct, job.protocol, upload_id)
                except urllib.error.HTTPError:
                    offset = 0  # the server forgot the upload
                self.lost[name] = self.lost.get(name, 0) + max(0, acked - offset)


def test_sigkill_during_uploads_of_every_protocol(
    server_factory: Any,
    link_proxy: Any,
    client_run: Any,
    tmp_path: Path,
    scale: Scale,
    chaos_results: Results,
) -> None:
    port, tcp_port = free_port(), free_port()
    data_dir = tmp_path / "data"

    def start() -> Any:
        # Restarts alternate between syncing every buffer (the offset moves all the time)
        # and the default batch syncing (it moves at checkpoints and request ends).
        fsync = FSYNC_POLICIES[kills % len(FSYNC_POLICIES)]
        args = ["--tcp-port", str(tcp_port), "--fsync", fsync]
        return server_factory(data_dir=data_dir, port=port, args=args).start()

    kills = 0
    server = start()
    proxies = [link_proxy(port, rate=scale.link_rate), link_proxy(tcp_port, rate=scale.link_rate)]
    count = scale.kill_uploads_per_protocol * len(PROTOCOLS)
    jobs = make_jobs(tmp_path / "src", PROTOCOLS, [scale.kill_file_size] * count)
    endpoints = Endpoints(
        f"http://127.0.0.1:{proxies[0].port}", f"tcp://127.0.0.1:{proxies[1].port}", server.url
    )
    run = client_run(jobs, endpoints, attempts=40, read_timeout=15.0)
    ledger = Ledger()
    rss = peak_rss(server.pid)
    chooser = random.Random(7)
    for _ in range(scale.kills):
        kill_at = time.monotonic() + chooser.uniform(*scale.kill_interval)
        # Halfway, every link is cut once: the server records what it holds (an offset
        # below 64 MiB is otherwise acknowledged only when a request ends), the clients
        # resume from there, and the kill then has acknowledged bytes to lose.
        cut_at = (time.monotonic() + kill_at) / 2
        while time.monotonic() < kill_at and run.running():
            if cut_at and time.monotonic() >= cut_at:
                cut_at = 0.0
                for proxy in proxies:
                    proxy.cut_all()
            ledger.observe(run.running(), server.url)
            rss = peak_rss(server.pid, rss)
            time.sleep(0.05)
        running = run.running()
        if not running:
            break
        ledger.observe(running, server.url)
        server.kill()
        kills += 1
        for proxy in proxies:
            proxy.close_gate()
        server = start()
        ledger.check_after_restart([job for job in running if job in run.running()], server.url)
        for proxy in proxies:
            proxy.open_gate()

    deadline = time.monotonic() + FINISH_DEADLINE
    while not run.wait(0.1) and time.monotonic() < deadline:
        rss = peak_rss(server.pid, rss)
    assert not run.running(), f"still running after {FINISH_DEADLINE} s: {run.running()}"
    corrupt = corrupt_files(jobs, server.url)
    report(chaos_results, scale, jobs, ledger, kills, corrupt, rss)

    assert kills >= min(2, scale.kills), f"only {kills} kills landed before the uploads ended"
    assert not [job.error for job in jobs if job.error]
    assert not corrupt, corrupt
    assert sum(ledger.lost.values()) == 0, ledger.lost


def report(
    results: Results,
    scale: Scale,
    jobs: list[Job],
    ledger: Ledger,
    kills: int,
    corrupt: list[str],
    rss: int,
) -> None:
    rows = []
    for protocol in PROTOCOLS:
        mine = [job for job in jobs if job.protocol == protocol]
        acked = max(
            (v for (name, _), v in ledger.acked.items() if name in {j.name for j in mine}),
            default=0,
        )
        rows.append(
            [
                protocol,
                len(mine),
                sum(ledger.kills_seen.get(job.name, 0) for job in mine),
                sum(1 for job in mine if job.stored_id and not job.error),
                sum(1 for job in mine if job.name in corrupt),
                f"{acked / MiB:.1f} MiB",
                sum(ledger.lost.get(job.name, 0) for job in mine),
            ]
        )
    results.table(
        "SIGKILL during uploads",
        f"{kills} SIGKILLs of the server, {len(jobs)} uploads of "
        f"{scale.kill_file_size // MiB} MiB at {scale.link_rate // MiB} MiB/s per connection; "
        f"server peak RSS {rss / MiB:.0f} MiB. 'kills lived' counts, per upload, the kills "
        "that hit it unfinished; 'acked bytes lost' sums what a restart reported below the "
        "last acknowledged offset.",
        [
            "protocol",
            "uploads",
            "kills lived",
            "completed",
            "corrupt files",
            "largest acked offset",
            "acked bytes lost",
        ],
        rows,
    )
