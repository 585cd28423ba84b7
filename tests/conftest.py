"""Shared fixtures: a real freight server in a subprocess on a loopback port."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest

# The services a backend may need: one PostgreSQL cluster and one SeaweedFS per session,
# started only by the tests that ask for them (a fresh database or bucket each).
from tests.pg.fixtures import pg_cluster, pg_dsn, pg_sessions
from tests.s3.fixtures import s3_blobs, s3_bucket, s3_place, seaweed

SERVICE_FIXTURES = (pg_cluster, pg_dsn, pg_sessions, s3_blobs, s3_bucket, s3_place, seaweed)

LISTEN_LINE = re.compile(r"listening on (https?://[^\s]+)")


@dataclass
class ServerProcess:
    """A ``freight serve`` child process; ``url`` is its base URL."""

    data_dir: Path
    args: list[str] = field(default_factory=list)
    port: int = 0
    proc: subprocess.Popen[str] | None = None
    url: str = ""
    # Long enough for the access log of a test's requests and the lines tests look for.
    output_tail: deque[str] = field(default_factory=lambda: deque(maxlen=20_000))

    def start(self, timeout: float = 20.0) -> ServerProcess:
        cmd = [
            sys.executable,
            "-m",
            "freight",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
            *self.args,
        ]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        seen: list[str] = []
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                output = "".join(seen)
                raise RuntimeError(f"server exited early with {self.proc.wait()}:\n{output}")
            seen.append(line)
            match = LISTEN_LINE.search(line)
            if match:
                self.url = match.group(1).rstrip("/")
                self.port = urlsplit(self.url).port or 0
                self._drain_output()
                return self
        raise RuntimeError("server did not report its address in time")

    def _drain_output(self) -> None:
        """Keep reading the server's output so a chatty server never blocks on a full pipe."""
        assert self.proc is not None and self.proc.stdout is not None
        stream = self.proc.stdout
        tail = self.output_tail

        def pump() -> None:
            for line in stream:
                tail.append(line)

        threading.Thread(target=pump, daemon=True).start()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> None:
        """SIGKILL: the crash a power-cut-free test can make."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[type[ServerProcess]]:
    """Start servers with custom arguments: ``server_factory(data_dir, args).start()``."""
    started: list[ServerProcess] = []

    class Factory(ServerProcess):
        def start(self, timeout: float = 20.0) -> ServerProcess:
            started.append(self)
            return super().start(timeout)

    yield Factory
    for server in started:
        server.stop()


@pytest.fixture
def freight_server(tmp_path: Path, server_factory: type[ServerProcess]) -> ServerProcess:
    """A running server with default settings and a fresh data directory."""
    return server_factory(data_dir=tmp_path / "data").start()


# In CI a skipped test is a failure: a green run must mean the whole suite ran. Locally a skip
# still says what is missing (a browser, a tool) without failing the run.
SKIPS_FAIL = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if SKIPS_FAIL and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped in CI (CI=true), which counts as a failure: {reason}"


@dataclass(frozen=True)
class TlsFiles:
    """A test CA and certificates it signed for 127.0.0.1 and localhost (PEM files)."""

    directory: Path
    ca: Path
    cert: Path
    key: Path

    def issue(self, name: str) -> tuple[Path, Path]:
        """Another certificate and key from the same CA, e.g. for a reload."""
        return _issue(self.directory, name, self.ca, self.directory / "ca.key")


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def _issue(directory: Path, name: str, ca: Path, ca_key: Path) -> tuple[Path, Path]:
    cert, key, csr = (directory / f"{name}.{ext}" for ext in ("pem", "key", "csr"))
    extensions = directory / f"{name}.ext"
    extensions.write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
    )
    _openssl(
        *("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"),
        *("-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}"),
    )
    _openssl(
        *("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key)),
        *("-set_serial", str(int.from_bytes(os.urandom(8), "big")), "-days", "2"),
        *("-out", str(cert), "-extfile", str(extensions)),
    )
    return cert, key


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A CA made for this test session (with the ``openssl`` command) and a server
    certificate it signed; nothing on the machine trusts the CA."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed: the TLS tests need it")
    directory = tmp_path_factory.mktemp("tls")
    ca, ca_key = directory / "ca.pem", directory / "ca.key"
    _openssl(
        *("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"),
        *("-keyout", str(ca_key), "-out", str(ca), "-days", "2", "-subj", "/CN=freight test CA"),
        *("-addext", "basicConstraints=critical,CA:TRUE"),
        *("-addext", "keyUsage=critical,keyCertSign,cRLSign"),
    )
    cert, key = _issue(directory, "server", ca, ca_key)
    return TlsFiles(directory, ca, cert, key)
