"""A real nginx in front of a freight server, mounted under a sub-path, for the tests.

nginx runs in the foreground as one process (``daemon off; master_process off;``) with its
config, pid, logs and temporary files in a test's own folder, on a free loopback port. The
``location`` block is the one docs/deploy.md recommends.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.peers import free_port, which

__all__ = ["NginxProxy", "nginx_proxy"]

CONFIG = """\
daemon off;
master_process off;
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {work}/body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      close;
    }}
    server {{
        listen 127.0.0.1:{port};
        location {prefix} {{
            proxy_pass http://127.0.0.1:{upstream}{prefix};
            proxy_http_version 1.1;
            proxy_request_buffering off;
            proxy_buffering off;
            client_max_body_size 0;
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_read_timeout 1h;
            proxy_send_timeout 1h;
        }}
    }}
}}
"""


@dataclass
class NginxProxy:
    """``url`` is where the mounted server is reached through nginx (no trailing slash)."""

    url: str
    process: subprocess.Popen[bytes]
    work: Path

    def error_log(self) -> str:
        with contextlib.suppress(OSError):
            return (self.work / "error.log").read_text(errors="replace")[-4000:]
        return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


@contextlib.contextmanager
def nginx_proxy(work: Path, upstream_port: int, prefix: str = "/sub/") -> Iterator[NginxProxy]:
    """nginx on a free port forwarding ``prefix`` to ``127.0.0.1:upstream_port`` as is."""
    nginx = which("nginx")
    if nginx is None:
        pytest.skip("nginx is not installed (Debian package nginx-light)")
    work.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = work / "nginx.conf"
    conf.write_text(CONFIG.format(work=work, port=port, upstream=upstream_port, prefix=prefix))
    command = [nginx, "-p", str(work), "-c", str(conf), "-e", str(work / "error.log")]
    checked = subprocess.run([*command, "-t"], capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stderr
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proxy = NginxProxy(f"http://127.0.0.1:{port}{prefix.rstrip('/')}", process, work)
    try:
        _wait_listening(proxy, port)
        yield proxy
    finally:
        proxy.stop()


def _wait_listening(proxy: NginxProxy, port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proxy.process.poll() is None, f"nginx exited: {proxy.error_log()}"
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1.0):
            return
        time.sleep(0.05)
    raise AssertionError(f"nginx did not listen within {timeout} s: {proxy.error_log()}")
