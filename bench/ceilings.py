"""The machine's own limits, measured in the same run as the servers.

- loopback TCP: ``iperf3`` sending the upload's size once over 127.0.0.1, with the system's
  congestion control and with cubic (which paces nothing: what same-host connections get);
- durable disk write: ``dd if=/dev/zero bs=1M conv=fdatasync`` of the upload's size into the
  work directory (after the same page-cache warm-up the uploads get);
- a plain TCP pair (``bench/tcp_baselines.py``: sendfile on one side, ``recv_into`` on the
  other): what raw TCP with no protocol at all achieves, for freight's TCP transport;
- SHA-256 on one core (OpenSSL through ``hashlib``, over a buffer already in memory): no one
  stream that is hashed on the way in can go faster than this, whatever the transport;
- hashing the upload's file with ``sha256sum`` and with ``openssl dgst -sha256`` (from the
  page cache): with curl's CPU for the same upload, the floor of a client that sends a file
  and checks its SHA-256 (one read, one hash).
- SHA-256 on one core of the source file read back from the page cache (``readinto`` one
  reused 256 KiB buffer, as ``hashlib.file_digest`` does): what hashing a stored file costs
  at least, which a server that hashes what it stored (freight) cannot avoid.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.measure import MiB, children_cpu_seconds, prewarm_page_cache
from bench.peers import Unavailable, free_port, which

__all__ = [
    "HASH_TOOLS",
    "Ceiling",
    "dd_fdatasync",
    "hash_file",
    "iperf3_loopback",
    "sha256_one_core",
    "sha256_page_cache",
    "tcp_pair",
]

_DD_SECONDS = re.compile(r"copied, ([0-9.]+) s")
# Client floors: a tool hashing the upload's file, named as the report names it.
HASH_TOOLS = {
    "sha256sum file": ("sha256sum",),
    "openssl dgst -sha256 file": ("openssl", "dgst", "-sha256"),
}


@dataclass(frozen=True)
class Ceiling:
    """How long the machine took to move the bytes, and the receiving side's CPU if known."""

    seconds: float
    cpu_seconds: float | None = None


def iperf3_loopback(size: int, timeout: float, congestion: str | None = None) -> float:
    """Seconds iperf3 takes to move ``size`` bytes over loopback (receiver's view), with the
    system's congestion control or ``congestion`` (freight's same-host connections use cubic
    where the system's paces: ``freight.same_host``)."""
    iperf3 = which("iperf3")
    if iperf3 is None:
        raise Unavailable("iperf3 is not installed (Debian package iperf3)")
    port = free_port()
    server = subprocess.Popen(
        [iperf3, "-s", "-1", "-p", str(port), "-B", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(50):  # the server needs a moment to listen; bounded retries
            client = subprocess.run(
                [
                    *(iperf3, "-c", "127.0.0.1", "-p", str(port), "-n", str(size), "-J"),
                    *(("-C", congestion) if congestion else ()),
                ],
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
            report = json.loads(client.stdout or "{}")
            if "end" in report and "sum_received" in report["end"]:
                return _iperf3_seconds(report["end"], size)
            if "refused" not in report.get("error", "refused"):
                raise Unavailable(f"iperf3 failed: {report.get('error')}")
            time.sleep(0.1)
        raise Unavailable("iperf3's server never accepted a connection")
    finally:
        server.kill()
        server.wait()


def _iperf3_seconds(end: dict[str, Any], size: int) -> float:
    """The receiver's time for ``size`` bytes; the sender's when a very short run left the
    receiver's summary empty (it happens with a 1 MiB smoke transfer)."""
    for side in ("sum_received", "sum_sent"):
        summary = end.get(side) or {}
        moved, seconds = float(summary.get("bytes", 0)), float(summary.get("seconds", 0))
        if moved > 0 and seconds > 0:
            return seconds * size / moved
    raise Unavailable("iperf3 reported no bytes moved")


def dd_fdatasync(directory: Path, size: int, timeout: float) -> float:
    """Seconds dd takes to write ``size`` bytes and fdatasync them."""
    target = directory / "dd.bin"
    prewarm_page_cache(directory, size)
    try:
        result = subprocess.run(
            [
                "dd",
                "if=/dev/zero",
                f"of={target}",
                f"bs={MiB}",
                f"count={size // MiB}",
                "conv=fdatasync",
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env={**os.environ, "LC_ALL": "C"},
        )
    finally:
        target.unlink(missing_ok=True)
    match = _DD_SECONDS.search(result.stderr)
    if result.returncode != 0 or match is None:
        raise Unavailable(f"dd failed: {result.stderr.strip()}")
    return float(match.group(1))


def tcp_pair(source: Path, directory: Path, timeout: float) -> dict[str, Ceiling]:
    """A plain sendfile -> recv_into + write pair (``bench/tcp_baselines.py``), both ways.

    Upload: this process sendfiles ``source`` to the pair's server, which stores it (after
    the page-cache warm-up). Download: the server sendfiles it back and this process writes
    it to a file (after the same warm-up), as ``freight get`` does.
    """
    del timeout  # loopback and two processes: nothing waits on anything but the copy
    try:
        baselines = importlib.import_module("bench.tcp_baselines")
    except ImportError as exc:
        raise Unavailable(f"bench/tcp_baselines.py is not there ({exc})") from exc
    server = baselines.BaselineServer("pair", directory / "tcp-pair")
    copy = directory / "tcp-pair-client" / "copy.bin"
    try:
        up = server.upload(source)
        prewarm_page_cache(copy.parent, up.size)
        down = server.download(copy)
        if copy.stat().st_size != up.size:
            raise Unavailable("the tcp pair's download came back with a different size")
    finally:
        server.stop()
        copy.unlink(missing_ok=True)
        (directory / "tcp-pair" / "received.bin").unlink(missing_ok=True)
    return {
        "up": Ceiling(up.seconds, up.server_cpu),
        "down": Ceiling(down.seconds, down.server_cpu),
    }


def sha256_one_core(size: int) -> Ceiling:
    """Seconds (and CPU seconds) one thread takes to SHA-256 ``size`` bytes from memory."""
    block = os.urandom(4 * MiB)
    view = memoryview(block)
    hasher = hashlib.sha256()
    started, cpu_started = time.perf_counter(), time.thread_time()
    for _ in range(max(1, size // len(block))):
        hasher.update(view)
    seconds = time.perf_counter() - started
    return Ceiling(seconds, time.thread_time() - cpu_started)


def hash_file(name: str, path: Path, timeout: float) -> Ceiling:
    """Seconds and CPU seconds the :data:`HASH_TOOLS` tool ``name`` takes to hash ``path``."""
    command = HASH_TOOLS[name]
    if which(command[0]) is None:
        raise Unavailable(f"{command[0]} is not installed")
    started, cpu_started = time.perf_counter(), children_cpu_seconds()
    result = subprocess.run(
        [*command, str(path)], capture_output=True, text=True, timeout=timeout, check=False
    )
    seconds, cpu = time.perf_counter() - started, children_cpu_seconds() - cpu_started
    if result.returncode != 0:
        raise Unavailable(f"{command[0]} failed: {result.stderr.strip()[-200:]}")
    return Ceiling(seconds, cpu)


def sha256_page_cache(path: Path) -> Ceiling:
    """Seconds (and CPU seconds) one thread takes to SHA-256 the file at ``path``, read from
    the page cache through one reused buffer."""
    buffer = bytearray(256 * 1024)
    view = memoryview(buffer)
    hasher = hashlib.sha256()
    with path.open("rb", buffering=0) as file:
        while file.readinto(buffer):  # untimed: bring it into the page cache
            pass
        file.seek(0)
        started, cpu_started = time.perf_counter(), time.thread_time()
        while got := file.readinto(buffer):
            hasher.update(view[:got])
        seconds = time.perf_counter() - started
    return Ceiling(seconds, time.thread_time() - cpu_started)
