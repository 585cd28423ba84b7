"""``freight send`` when the server's disk fills under the upload: it fails (no success
printed), and once there is room again a new run finishes the same upload."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_support import ChaosProxy, MiB, _Rule, cli_env, make_file, run_cli, start_cli
from helpers import request
from loopfs import fill, loop_ext4

from tests.conftest import ServerProcess


@pytest.fixture
def small_ext4(tmp_path: Path) -> Iterator[Path]:
    with loop_ext4(tmp_path) as mount:
        yield mount


def test_send_fails_when_the_disk_fills_and_finishes_once_there_is_room(
    small_ext4: Path, server_factory: type[ServerProcess], tmp_path: Path
) -> None:
    server = server_factory(data_dir=small_ext4 / "data", args=["--disk-reserve", "0"]).start()
    source = tmp_path / "big.bin"
    digest = make_file(source, 24 * MiB)
    proxy = ChaosProxy(server.port).start()
    # The first connection stalls after 4 MiB; the disk fills meanwhile.
    proxy.reset(up=_Rule(freeze_after=4 * MiB, freeze_seconds=2.0))
    env = cli_env(tmp_path / "state")
    filler = small_ext4 / "filler"
    try:
        sender = start_cli("send", str(source), proxy.url, "--json", "--retries", "2", env=env)
        deadline = time.monotonic() + 30
        while proxy.counted["up"] < 4 * MiB:
            assert time.monotonic() < deadline and sender.poll() is None
            time.sleep(0.02)
        fill(filler, MiB)
        out, err = sender.communicate(timeout=120)
        assert sender.returncode != 0, out
        assert '"sha256"' not in out and "Sent" not in out
        assert "disk" in err.lower(), err
        files = json.loads(request("GET", f"{server.url}/api/files").body)["files"]
        assert files == []
        filler.unlink()
        done = run_cli("send", str(source), proxy.url, "--json", env=env)
    finally:
        proxy.stop()
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["resumed_from"] > 0
    files = json.loads(request("GET", f"{server.url}/api/files").body)["files"]
    assert [f["sha256"] for f in files] == [digest]
    log = "".join(server.output_tail)
    assert "Traceback" not in log and "never retrieved" not in log, log
