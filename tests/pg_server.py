"""A throwaway PostgreSQL cluster for tests: ``initdb`` + ``pg_ctl`` in a temporary
directory, listening on 127.0.0.1 at a free port with its socket in that directory.

PostgreSQL refuses to run as root, so as root every server command runs as the ``postgres``
user (``runuser``) in a directory that user owns; as anyone else it runs as that user.
``fsync=off``: a test cluster never needs to survive a power cut.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["PgCluster", "find_bindir", "free_port", "start_cluster"]

SERVER_USER = "postgres"


def find_bindir() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl``: ``pg_config --bindir``, else the
    newest of Debian's ``/usr/lib/postgresql/<version>/bin``; None when there is none."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        done = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        if done.returncode == 0 and done.stdout.strip():
            candidates.append(Path(done.stdout.strip()))
    versions = glob.glob("/usr/lib/postgresql/*/bin")
    versions.sort(
        key=lambda path: int(Path(path).parent.name) if Path(path).parent.name.isdigit() else 0
    )
    candidates.extend(Path(path) for path in reversed(versions))
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PgCluster:
    """One cluster; :meth:`start` it, :meth:`remove` it when done (stops it first)."""

    bindir: Path
    # Addresses to listen on besides 127.0.0.1 (each must exist when the server starts).
    also_listen: tuple[str, ...] = ()
    root: Path = field(init=False)
    port: int = field(init=False, default=0)
    running: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        # Not under pytest's base temp: its directories are private to the user running
        # the tests, and the server user must reach this one.
        self.root = Path(tempfile.mkdtemp(prefix="freight-pg-"))
        self._as_root = os.geteuid() == 0
        if self._as_root:
            shutil.chown(self.root, SERVER_USER, SERVER_USER)

    @property
    def data(self) -> Path:
        return self.root / "data"

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self._as_root:
            command = ["runuser", "-u", SERVER_USER, "--", *command]
        return subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, cwd=self.root
        )

    def init(self) -> None:
        done = self._run(
            "initdb", "-D", str(self.data), "-U", SERVER_USER, "-A", "trust", "-E", "UTF8",
            "--locale=C", "--no-sync",
        )  # fmt: skip
        if done.returncode:
            raise RuntimeError(f"initdb failed: {done.stderr or done.stdout}")

    def start(self) -> PgCluster:
        if not self.data.exists():
            self.init()
        if not self.port:
            self.port = free_port()
        listen = ",".join(("127.0.0.1", *self.also_listen))
        options = (
            f"-c listen_addresses={listen} -p {self.port} -k {self.root} -c fsync=off"
            " -c full_page_writes=off -c max_connections=100"
        )
        done = self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-o", options,
            "-w", "-t", "60", "start",
        )  # fmt: skip
        if done.returncode:
            raise RuntimeError(f"pg_ctl start failed: {done.stderr or done.stdout}{self.log()}")
        self.running = True
        return self

    def stop(self, mode: str = "fast") -> None:
        if self.running:
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")
            self.running = False

    def remove(self) -> None:
        try:
            self.stop(mode="immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def log(self) -> str:
        try:
            return (self.root / "server.log").read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{SERVER_USER}@127.0.0.1:{self.port}/{database}"


def start_cluster() -> tuple[PgCluster, float]:
    """A started cluster and how long initdb + start took (seconds)."""
    bindir = find_bindir()
    if bindir is None:
        raise FileNotFoundError("no PostgreSQL server binaries (initdb, pg_ctl)")
    began = time.monotonic()
    cluster = PgCluster(bindir)
    try:
        cluster.start()
    except BaseException:
        cluster.remove()
        raise
    return cluster, time.monotonic() - began
