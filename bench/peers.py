"""Starting the servers under test on loopback, each with its own throwaway config.

Every server gets a directory of its own under the run's work directory::

    <work>/<name>/store/     where it keeps what it receives (and what it serves)
    <work>/<name>/server.log its stdout and stderr
    <work>/<name>/...        its config (nginx.conf) and temporary files

A server that cannot be started here (a tool or package missing) raises :class:`Unavailable`
with the reason, and the benchmark reports that target as skipped instead of failing.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.measure import process_tree
from bench.worktree import python_env

__all__ = [
    "BENCH_DIR",
    "NODE_DIR",
    "Peer",
    "Unavailable",
    "ensure_node_modules",
    "free_port",
    "freight_features",
    "launch",
    "node_for_tus",
    "start_freight",
    "start_http_server",
    "start_nginx",
    "start_node_tus",
    "start_tuspyserver",
    "wait_ready",
    "which",
]

BENCH_DIR = Path(__file__).resolve().parent
NODE_DIR = BENCH_DIR / "node"
NODE_STAMP = NODE_DIR / "node_modules" / ".package-lock.json"
NODE_MIN = (20, 19)
START_TIMEOUT = 30.0

# What each server does about durability; none of the peers syncs received bytes.
SYNCS = {
    "never": "no (left to the kernel)",
    "batch": "yes: every 64 MiB and at the end of every request",
    "always": "yes: every buffer before it is acknowledged",
}


class Unavailable(Exception):
    """A server or tool that cannot run on this machine; the message says why."""


@dataclass
class Peer:
    """A running server: where to reach it, where it stores, how to stop it."""

    name: str
    process: subprocess.Popen[bytes]
    url: str
    store_dir: Path
    log_path: Path
    syncs: str = "no"
    tcp_url: str | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def pids(self) -> list[int]:
        return process_tree(self.process.pid)

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the server (its whole process group), SIGKILL it if it lingers."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout)


def which(name: str) -> str | None:
    """``shutil.which`` that also looks in the sbin directories a non-root PATH may lack."""
    found = shutil.which(name)
    if found is None:
        for directory in ("/usr/sbin", "/sbin", "/usr/local/sbin"):
            candidate = Path(directory) / name
            if os.access(candidate, os.X_OK):
                return str(candidate)
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def launch(
    command: Sequence[str],
    directory: Path,
    *,
    env: dict[str, str] | None = None,
    cgroup_procs: Path | None = None,
    cwd: Path | None = None,
) -> tuple[subprocess.Popen[bytes], Path]:
    """Start ``command`` in its own process group, output to ``directory/server.log``."""
    directory.mkdir(parents=True, exist_ok=True)
    log_path = directory / "server.log"
    argv = list(command)
    if cgroup_procs is not None:
        # The shell puts itself into the cgroup, then becomes the server: nothing escapes.
        argv = ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', str(cgroup_procs), *argv]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            start_new_session=True,
        )
    return process, log_path


def wait_ready(peer: Peer, probe_url: str | None, port: int, timeout: float) -> Peer:
    """Wait until ``port`` accepts connections (and ``probe_url`` answers, if given)."""
    deadline = time.monotonic() + timeout
    last_error = "no attempt"
    while time.monotonic() < deadline:
        if not peer.alive():
            raise Unavailable(
                f"{peer.name} exited with {peer.process.returncode}: {peer.log_tail()}"
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                pass
            if probe_url is not None:
                with urllib.request.urlopen(probe_url, timeout=2.0) as reply:
                    reply.read()
            return peer
        except OSError as exc:
            last_error = str(exc)
            time.sleep(0.05)
    peer.stop()
    raise Unavailable(f"{peer.name} did not start within {timeout:.0f} s ({last_error})")


# --- nginx: downloads with sendfile, uploads with WebDAV PUT ------------------------------

NGINX_CONF = """\
daemon off;
master_process on;
worker_processes 1;
{user}
pid {work}/nginx.pid;
error_log {work}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    default_type application/octet-stream;
    client_max_body_size 0;
    client_body_buffer_size 1m;
    client_body_temp_path {store}/.nginx-body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {store};
        location / {{
            dav_methods PUT;
            create_full_put_path on;
            dav_access user:rw;
        }}
    }}
}}
"""


def start_nginx(work: Path) -> Peer:
    """nginx with one worker: GET with sendfile, PUT through the WebDAV module."""
    nginx = which("nginx")
    if nginx is None:
        raise Unavailable("nginx is not installed (Debian package nginx-light or nginx)")
    directory = work / "nginx"
    store = directory / "store"
    store.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = directory / "nginx.conf"
    user = "user root;" if os.geteuid() == 0 else ""
    conf.write_text(
        NGINX_CONF.format(user=user, work=directory, store=store, port=port), encoding="utf-8"
    )
    command = [nginx, "-p", str(directory), "-c", str(conf), "-e", str(directory / "error.log")]
    check = subprocess.run([*command, "-t"], capture_output=True, text=True, check=False)
    if check.returncode != 0:
        raise Unavailable(f"nginx rejected its config: {check.stderr.strip()}")
    process, log = launch(command, directory)
    peer = Peer("nginx", process, f"http://127.0.0.1:{port}", store, log)
    return wait_ready(peer, None, port, START_TIMEOUT)


# --- Node.js: @tus/server with @tus/file-store ---------------------------------------------


def _node_version(node: str) -> tuple[int, ...]:
    out = subprocess.run([node, "--version"], capture_output=True, text=True, check=False)
    return tuple(int(part) for part in out.stdout.strip().lstrip("v").split(".")[:2])


def ensure_node_modules(timeout: float = 300.0) -> None:
    """``npm ci`` in bench/node when its node_modules is missing or older than the lock."""
    lock = NODE_DIR / "package-lock.json"
    if NODE_STAMP.exists() and NODE_STAMP.stat().st_mtime >= lock.stat().st_mtime:
        return
    npm = which("npm")
    if npm is None:
        raise Unavailable("npm is not installed, so @tus/server cannot be installed")
    result = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise Unavailable(f"npm ci in {NODE_DIR} failed: {result.stderr.strip()[-500:]}")
    NODE_STAMP.touch()


def node_for_tus() -> str:
    """The ``node`` binary, once bench/node's packages are installed for it."""
    node = which("node")
    if node is None:
        raise Unavailable("Node.js is not installed")
    version = _node_version(node)
    if version < NODE_MIN:
        found = ".".join(map(str, version))
        raise Unavailable(f"@tus/server 2 needs Node.js >= 20.19, this is {found}")
    ensure_node_modules()
    return node


def start_node_tus(work: Path) -> Peer:
    node = node_for_tus()
    directory = work / "node-tus"
    store = directory / "store"
    store.mkdir(parents=True, exist_ok=True)
    port = free_port()
    command = [node, str(NODE_DIR / "tus_server.mjs"), str(port), str(store)]
    process, log = launch(command, directory)
    peer = Peer("@tus/server", process, f"http://127.0.0.1:{port}/files", store, log)
    return wait_ready(peer, None, port, START_TIMEOUT)


# --- Python: tuspyserver under uvicorn, and http.server -------------------------------------


def _missing_modules(*names: str) -> list[str]:
    return [name for name in names if importlib.util.find_spec(name) is None]


def start_tuspyserver(work: Path) -> Peer:
    missing = _missing_modules("tuspyserver", "fastapi", "uvicorn")
    if missing:
        raise Unavailable(f"not installed: {', '.join(missing)} (pip install -e '.[bench]')")
    directory = work / "tuspyserver"
    store = directory / "store"
    store.mkdir(parents=True, exist_ok=True)
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "--factory", "bench.tuspyserver_app:create_app"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    command += ["--no-access-log"]
    # The fast event loop and HTTP parser a production deployment would use, when present.
    if not _missing_modules("uvloop"):
        command += ["--loop", "uvloop"]
    if not _missing_modules("httptools"):
        command += ["--http", "httptools"]
    env = {"FREIGHT_BENCH_TUS_DIR": str(store)}
    process, log = launch(command, directory, env=env, cwd=BENCH_DIR.parent)
    peer = Peer("tuspyserver", process, f"http://127.0.0.1:{port}/files", store, log)
    return wait_ready(peer, None, port, START_TIMEOUT)


def start_http_server(work: Path) -> Peer:
    """``python3 -m http.server``: a download-only peer."""
    directory = work / "http.server"
    store = directory / "store"
    store.mkdir(parents=True, exist_ok=True)
    port = free_port()
    command = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    command += ["--directory", str(store)]
    process, log = launch(command, directory)
    peer = Peer("http.server", process, f"http://127.0.0.1:{port}", store, log)
    return wait_ready(peer, None, port, START_TIMEOUT)


# --- freight -------------------------------------------------------------------------------


@dataclass(frozen=True)
class FreightFeatures:
    """What this checkout of freight offers (other work may not have landed yet)."""

    upload_protocols: tuple[str, ...]
    tcp_port: bool


def freight_features() -> FreightFeatures:
    from freight.cli.serve import serve
    from freight.client.protocols import UPLOADERS

    return FreightFeatures(
        upload_protocols=tuple(sorted(UPLOADERS)),
        tcp_port=any(param.name == "tcp_port" for param in serve.params),
    )


def _serves_tcp(src: Path) -> bool:
    """Whether the freight under ``src`` (another checkout) has ``serve --tcp-port``."""
    result = subprocess.run(
        [sys.executable, "-m", "freight", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT,
        check=False,
        env={**os.environ, **python_env(src)},
    )
    return "--tcp-port" in result.stdout


def start_freight(
    work: Path,
    fsync: str,
    *,
    name: str | None = None,
    tcp: bool = True,
    cgroup_procs: Path | None = None,
    extra_args: tuple[str, ...] = (),
    src: Path | None = None,
    env: dict[str, str] | None = None,
) -> Peer:
    """freight serving from this checkout, or from the sources under ``src`` when given."""
    name = name or f"freight-{fsync}"
    directory = work / name
    store = directory / "data"
    port = free_port()
    command = [sys.executable, "-m", "freight", "serve", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--data-dir", str(store), "--fsync", fsync, *extra_args]
    tcp_url = None
    if tcp and (freight_features().tcp_port if src is None else _serves_tcp(src)):
        tcp_port = free_port()
        command += ["--tcp-port", str(tcp_port)]
        tcp_url = f"tcp://127.0.0.1:{tcp_port}"
    environment = {"PYTHONUNBUFFERED": "1", **(env or {})}
    if src is not None:
        environment.update(python_env(src))
    process, log = launch(command, directory, env=environment, cgroup_procs=cgroup_procs)
    url = f"http://127.0.0.1:{port}"
    peer = Peer(name, process, url, store, log, syncs=SYNCS[fsync], tcp_url=tcp_url)
    return wait_ready(peer, f"{url}/health", port, START_TIMEOUT)
