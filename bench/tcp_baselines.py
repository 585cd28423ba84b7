"""freight's raw TCP transport against the naive designs it must beat, on loopback.

Usage: ``python -m bench.tcp_baselines [--size-mib 1024] [--runs 3] [--fsync never]``

Four servers, each in its own process so its CPU time can be read from ``/proc``:

- ``naive``: the "size header, then a 1 KiB read/write loop" design: ``recv(1024)`` +
  ``write`` to receive, ``read(1024)`` + ``sendall`` to send. No name, checksum or resume.
- ``pair``: a plain ``sendfile`` → ``recv_into`` (one reused 1 MiB buffer) + ``write`` pair in
  each direction, with ``os.sendfile`` looped (one call stops near 2 GiB): raw TCP with no
  protocol at all, the ceiling a framed protocol can approach.
- ``freight``: ``freight serve --tcp-port 0`` with freight's own client (``upload_tcp`` and
  ``download_tcp``): framing, a SHA-256 of every byte on both sides, durable ACK windows
  (recorded in SQLite; synced too unless ``--fsync never``), resumable.
- ``freight-bare``: the same with nothing hashed on either side (``--no-sha256``, and a
  client that sends DONE with a zero digest, as a device too small to hash would): freight's
  receive and send paths alone, against the pair.

The clients run in this process: their CPU time is this process's over the transfer. Every
transfer is preceded by the page-cache warm-up of :mod:`bench.measure` in the directory that
receives the file (first-touch page cache costs about 2 s/GiB on this kind of VM, and would
land on whichever side writes) and every stored copy is checked by size. The machine is
shared: run several rounds and read the ranges, not one number.
:class:`BaselineServer` (``upload``/``download`` returning :class:`Run`) is also what
:mod:`bench.ceilings` uses for its "tcp pair" ceiling: keep that interface stable.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.measure import prewarm_page_cache

__all__ = ["BaselineServer", "FreightServer", "Run", "main", "measure_pair"]

MiB = 1024 * 1024
GiB = 1024 * MiB
NAIVE_BLOCK = 1024
PAIR_BUFFER = MiB
SENDFILE_MAX = 0x7FFFF000  # Linux moves at most this much per sendfile call
_REQUEST = struct.Struct(">cQ")  # b"U" + size (upload) or b"D" + 0 (download)


@dataclass(frozen=True)
class Run:
    """One timed transfer: wall seconds, the server process's CPU seconds and the client's
    (the clients run in this process: its own CPU time over the transfer, all threads)."""

    design: str
    direction: str
    size: int
    seconds: float
    server_cpu: float
    client_cpu: float = 0.0

    @property
    def gib_per_s(self) -> float:
        return self.size / GiB / self.seconds

    @property
    def cpu_per_gib(self) -> float:
        return self.server_cpu / (self.size / GiB)

    @property
    def client_cpu_per_gib(self) -> float:
        return self.client_cpu / (self.size / GiB)


def process_cpu(pid: int) -> float:
    """User + system seconds of a process, all its threads and reaped children included."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def own_cpu() -> float:
    """User + system seconds of this process so far, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# the baseline servers (run as: python -m bench.tcp_baselines --serve naive|pair --dir D) --------


def serve(design: str, directory: Path) -> None:
    """Answer uploads (stored as ``received.bin``) and downloads (of it), one at a time."""
    listener = socket.create_server(("127.0.0.1", 0))
    print(f"PORT {listener.getsockname()[1]}", flush=True)
    stored = directory / "received.bin"
    while True:
        conn, _ = listener.accept()
        with conn:
            op, size = _REQUEST.unpack(_read_exact(conn, _REQUEST.size))
            if op == b"U":
                with stored.open("wb", buffering=0) as out:
                    (_receive_naive if design == "naive" else _receive_pair)(
                        conn, out.fileno(), size
                    )
                conn.sendall(b"K")  # stored: only now does the client stop its clock
            else:
                with stored.open("rb", buffering=0) as source:
                    size = os.fstat(source.fileno()).st_size
                    conn.sendall(struct.pack(">Q", size))
                    (_send_naive if design == "naive" else _send_pair)(conn, source.fileno(), size)


def _read_exact(conn: socket.socket, count: int) -> bytes:
    data = bytearray()
    while len(data) < count:
        got = conn.recv(count - len(data))
        if not got:
            raise ConnectionError("peer closed early")
        data += got
    return bytes(data)


def _receive_naive(conn: socket.socket, fd: int, size: int) -> None:
    remaining = size
    while remaining:
        chunk = conn.recv(min(NAIVE_BLOCK, remaining))
        if not chunk:
            raise ConnectionError("peer closed early")
        os.write(fd, chunk)
        remaining -= len(chunk)


def _receive_pair(conn: socket.socket, fd: int, size: int) -> None:
    buffer = memoryview(bytearray(PAIR_BUFFER))
    remaining = size
    while remaining:
        got = conn.recv_into(buffer[: min(PAIR_BUFFER, remaining)])
        if not got:
            raise ConnectionError("peer closed early")
        view = buffer[:got]
        while view:
            view = view[os.write(fd, view) :]
        remaining -= got


def _send_naive(conn: socket.socket, fd: int, size: int) -> None:
    while block := os.read(fd, NAIVE_BLOCK):
        conn.sendall(block)


def _send_pair(conn: socket.socket, fd: int, size: int) -> None:
    offset = 0
    while offset < size:
        sent = os.sendfile(conn.fileno(), fd, offset, min(size - offset, SENDFILE_MAX))
        if sent == 0:
            raise ConnectionError("sendfile made no progress")
        offset += sent


# the baseline clients --------------------------------------------------------------------------


class BaselineServer:
    """A ``serve`` subprocess."""

    def __init__(self, design: str, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.design, self.directory = design, directory
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.tcp_baselines",
                "--serve",
                design,
                "--dir",
                str(directory),
            ],
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parents[1],
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        match = re.match(r"PORT (\d+)", line)
        if not match:
            self.stop()
            raise RuntimeError(f"baseline server did not start: {line!r}")
        self.port = int(match.group(1))

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def upload(self, source: Path) -> Run:
        size = source.stat().st_size
        prewarm_page_cache(self.directory, size)
        cpu, mine, started = process_cpu(self.proc.pid), own_cpu(), time.monotonic()
        with socket.create_connection(("127.0.0.1", self.port)) as conn:
            conn.sendall(_REQUEST.pack(b"U", size))
            with source.open("rb", buffering=0) as file:
                if self.design == "naive":
                    _send_naive(conn, file.fileno(), size)
                else:
                    _send_pair(conn, file.fileno(), size)
            if conn.recv(1) != b"K":
                raise ConnectionError("the server did not confirm the upload")
        seconds = time.monotonic() - started
        if (self.directory / "received.bin").stat().st_size != size:
            raise RuntimeError("the baseline server stored a different size")
        server_cpu, client_cpu = process_cpu(self.proc.pid) - cpu, own_cpu() - mine
        return Run(self.design, "upload", size, seconds, server_cpu, client_cpu)

    def download(self, target: Path) -> Run:
        prewarm_page_cache(target.parent, (self.directory / "received.bin").stat().st_size)
        cpu, mine, started = process_cpu(self.proc.pid), own_cpu(), time.monotonic()
        with socket.create_connection(("127.0.0.1", self.port)) as conn:
            conn.sendall(_REQUEST.pack(b"D", 0))
            size = struct.unpack(">Q", _read_exact(conn, 8))[0]
            with target.open("wb", buffering=0) as out:
                if self.design == "naive":
                    _receive_naive(conn, out.fileno(), size)
                else:
                    _receive_pair(conn, out.fileno(), size)
        seconds = time.monotonic() - started
        server_cpu, client_cpu = process_cpu(self.proc.pid) - cpu, own_cpu() - mine
        return Run(self.design, "download", size, seconds, server_cpu, client_cpu)


def measure_pair(source: Path, directory: Path, *, timeout: float) -> dict[str, float]:
    """Seconds a plain sendfile → recv_into + write pair takes to move ``source`` (one run)."""
    del timeout  # loopback and one process: nothing here waits on anything but the copy
    server = BaselineServer("pair", directory / "tcp-pair")
    try:
        return {"": server.upload(source).seconds}
    finally:
        server.stop()
        (directory / "tcp-pair" / "received.bin").unlink(missing_ok=True)


# freight ---------------------------------------------------------------------------------------


class FreightServer:
    """``freight serve --tcp-port 0`` and freight's own client."""

    design = "freight"

    def __init__(self, directory: Path, fsync: str, *, hashing: bool = True) -> None:
        self.directory = directory
        self.hashing = hashing
        if not hashing:
            self.design = "freight-bare"
        command = [sys.executable, "-m", "freight", "serve", "--port", "0", "--tcp-port", "0"]
        command += [] if hashing else ["--no-sha256"]
        self.proc = subprocess.Popen(
            [*command, "--data-dir", str(directory), "--fsync", fsync],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        self.http = self.tcp = ""
        while not (self.http and self.tcp):
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("freight serve exited early")
            if match := re.search(r"listening on (http://\S+)", line):
                self.http = match.group(1)
            if match := re.search(r"listening on (tcp://\S+)", line):
                self.tcp = match.group(1)
        self.last_url = ""
        self.last_size = 0

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)

    def upload(self, source: Path) -> Run:
        from freight.client.tcp import upload_tcp

        size = source.stat().st_size
        prewarm_page_cache(self.directory, size)
        cpu, mine, started = process_cpu(self.proc.pid), own_cpu(), time.monotonic()
        result = asyncio.run(upload_tcp(source, self.tcp, verify=self.hashing))
        seconds = time.monotonic() - started
        self.last_url, self.last_size = result.url, size
        server_cpu, client_cpu = process_cpu(self.proc.pid) - cpu, own_cpu() - mine
        return Run(self.design, "upload", size, seconds, server_cpu, client_cpu)

    def download(self, target: Path) -> Run:
        from freight.client.tcp import download_tcp

        target.unlink(missing_ok=True)
        prewarm_page_cache(target.parent, self.last_size)
        cpu, mine, started = process_cpu(self.proc.pid), own_cpu(), time.monotonic()
        result = asyncio.run(download_tcp(self.last_url, target))
        seconds = time.monotonic() - started
        server_cpu, client_cpu = process_cpu(self.proc.pid) - cpu, own_cpu() - mine
        run = Run(self.design, "download", result.size, seconds, server_cpu, client_cpu)
        self._delete(self.last_url.rsplit("/", 1)[1])  # keep the disk from filling up
        return run

    def _delete(self, file_id: str) -> None:
        request = urllib.request.Request(f"{self.http}/api/files/{file_id}", method="DELETE")
        urllib.request.urlopen(request, timeout=30).close()


# the comparison --------------------------------------------------------------------------------


def make_source(path: Path, size: int) -> None:
    """Random bytes (incompressible, so no layer can cheat), written block by block."""
    with path.open("wb") as out:
        remaining = size
        while remaining > 0:
            block = os.urandom(min(MiB, remaining))
            out.write(block)
            remaining -= len(block)


def run_rounds(
    source: Path, work: Path, runs: int, fsync: str, log: Callable[[str], None]
) -> list[Run]:
    makers: dict[str, Callable[[], BaselineServer | FreightServer]] = {
        "naive": lambda: BaselineServer("naive", work / "naive"),
        "pair": lambda: BaselineServer("pair", work / "pair"),
        "freight": lambda: FreightServer(work / "freight", fsync),
        "freight-bare": lambda: FreightServer(work / "freight-bare", fsync, hashing=False),
    }
    runs_done: list[Run] = []
    servers = {name: make() for name, make in makers.items()}
    try:
        for round_ in range(1, runs + 1):
            for name, server in servers.items():
                for run in (server.upload(source), server.download(work / f"{name}-copy.bin")):
                    runs_done.append(run)
                    log(
                        f"round {round_} {name:8} {run.direction:8} {run.gib_per_s:5.2f} GiB/s  "
                        f"server CPU {run.cpu_per_gib:5.2f} s/GiB  "
                        f"client CPU {run.client_cpu_per_gib:5.2f} s/GiB"
                    )
                (work / f"{name}-copy.bin").unlink(missing_ok=True)
    finally:
        for server in servers.values():
            server.stop()
    return runs_done


def summarise(runs: list[Run]) -> list[dict[str, object]]:
    rows = []
    for design in ("naive", "pair", "freight", "freight-bare"):
        for direction in ("upload", "download"):
            mine = [r for r in runs if r.design == design and r.direction == direction]
            if not mine:
                continue
            speeds = [r.gib_per_s for r in mine]
            cpus = [r.cpu_per_gib for r in mine]
            client_cpus = [r.client_cpu_per_gib for r in mine]
            rows.append(
                {
                    "design": design,
                    "direction": direction,
                    "runs": len(mine),
                    "gib_per_s": [
                        round(min(speeds), 2),
                        round(statistics.median(speeds), 2),
                        round(max(speeds), 2),
                    ],
                    "server_cpu_s_per_gib": [
                        round(min(cpus), 2),
                        round(statistics.median(cpus), 2),
                        round(max(cpus), 2),
                    ],
                    "client_cpu_s_per_gib": [
                        round(min(client_cpus), 2),
                        round(statistics.median(client_cpus), 2),
                        round(max(client_cpus), 2),
                    ],
                }
            )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--fsync", choices=["never", "batch", "always"], default="never")
    parser.add_argument(
        "--work", type=Path, default=None, help="scratch directory (default: a temp dir)"
    )
    parser.add_argument("--serve", choices=["naive", "pair"], help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.serve:
        serve(options.serve, options.dir)
        return
    with tempfile.TemporaryDirectory(dir=options.work) as scratch:
        work = Path(scratch)
        source = work / "source.bin"
        make_source(source, options.size_mib * MiB)
        runs = run_rounds(
            source, work, options.runs, options.fsync, lambda line: print(line, flush=True)
        )
    print("\nmin / median / max over the runs (CPU includes each side's worker threads):")
    for row in summarise(runs):
        print(
            f"{row['design']:8} {row['direction']:8} GiB/s {row['gib_per_s']}  "
            f"server CPU s/GiB {row['server_cpu_s_per_gib']}  "
            f"client CPU s/GiB {row['client_cpu_s_per_gib']}"
        )
    print(json.dumps(summarise(runs)))


if __name__ == "__main__":
    main()
