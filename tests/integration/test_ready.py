"""``/health`` and ``/ready`` against real ``freight serve`` processes on a small loop-mounted
filesystem (root is not stopped by file modes, so a read-only mount is the real thing)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .helpers import MiB, request
from .loopfs import fill, loop_ext4

CACHE_SECONDS = 1.0  # freight.server.ready.CACHE_SECONDS: answers are shared this long


@pytest.fixture
def small_ext4(tmp_path: Path) -> Iterator[Path]:
    with loop_ext4(tmp_path) as mount:
        yield mount


def ready(url: str) -> tuple[int, dict[str, Any]]:
    time.sleep(CACHE_SECONDS + 0.1)  # a fresh check, not the last answer
    reply = request("GET", f"{url}/ready")
    return reply.status, json.loads(reply.body)


def run(*command: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr


def failed(body: dict[str, Any]) -> set[str]:
    return {name for name, check in body["checks"].items() if not check["ok"]}


def test_ready_and_health_need_no_token(server_factory: Any, tmp_path: Path) -> None:
    server = server_factory(data_dir=tmp_path / "data", args=["--token", "secret"]).start()
    assert request("GET", f"{server.url}/health").status == 200
    status, body = ready(server.url)
    assert status == 200, body
    assert body["status"] == "ready"
    assert set(body["checks"]) == {"database", "storage", "disk_space"}
    assert failed(body) == set()
    assert request("GET", f"{server.url}/metrics").status == 401  # this one keeps its token


def test_a_read_only_data_directory_is_not_ready(server_factory: Any, small_ext4: Path) -> None:
    server = server_factory(data_dir=small_ext4 / "data", args=["--disk-reserve", "0"]).start()
    assert ready(server.url)[0] == 200
    # The whole filesystem cannot be remounted read-only while the database is open for
    # writing ("busy"); a read-only bind mount over the uploads directory is the same to
    # the server, root or not.
    uploads = str(small_ext4 / "data" / "uploads")
    run("mount", "--bind", uploads, uploads)
    try:
        run("mount", "-o", "remount,bind,ro", uploads)
        status, body = ready(server.url)
        assert status == 503, body
        assert body["status"] == "unready"
        assert failed(body) == {"storage"}, body
        assert "read-only" in body["checks"]["storage"]["error"].lower()
        assert str(small_ext4) not in json.dumps(body)  # no paths to anonymous callers
        assert request("GET", f"{server.url}/health").status == 200  # alive all the same
    finally:
        run("umount", uploads)
    assert ready(server.url)[0] == 200


def test_free_space_below_the_reserve_is_not_ready(server_factory: Any, small_ext4: Path) -> None:
    args = ["--disk-reserve", str(16 * MiB)]
    server = server_factory(data_dir=small_ext4 / "data", args=args).start()
    assert ready(server.url)[0] == 200
    fill(small_ext4 / "filler", leave=8 * MiB)
    status, body = ready(server.url)
    assert status == 503, body
    assert failed(body) == {"disk_space"}, body
    assert "reserve" in body["checks"]["disk_space"]["error"]
    (small_ext4 / "filler").unlink()
    assert ready(server.url)[0] == 200
