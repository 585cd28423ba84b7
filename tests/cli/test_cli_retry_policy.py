"""The retry policy as a user sees it: a server never reached is given up on within seconds
(tests/cli/test_cli_many.py), one that answered and then went away is waited for longer, and
the progress display says "retrying" rather than freezing its rate and time left."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

from cli_support import ChaosProxy, MiB, _Rule, make_file, start_cli
from rich.progress import Progress

from freight.cli.columns import EtaColumn, SpeedColumn

OUTAGE = 14.0  # longer than a server never reached is given


def _unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_a_server_gone_midway_is_waited_for_longer(
    server_factory: Any,
    chaos_proxy: Any,
    tmp_path: Path,
    env: dict[str, str],
) -> None:
    source = tmp_path / "big.bin"
    digest = make_file(source, 24 * MiB)
    first = server_factory(data_dir=tmp_path / "data").start()
    proxy: ChaosProxy = chaos_proxy(first.port)
    proxy.reset(up=_Rule(blackhole_after=8 * MiB))
    client = start_cli("send", str(source), proxy.url, "--json", "--stall-timeout", "2", env=env)
    deadline = time.monotonic() + 60
    while proxy.counted["up"] < 8 * MiB:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    first.kill()
    proxy.upstream_port = _unused_port()  # nothing answers there
    proxy.reset()
    time.sleep(OUTAGE)
    assert client.poll() is None, client.communicate()  # still trying
    second = server_factory(data_dir=tmp_path / "data").start()
    proxy.upstream_port = second.port
    stdout, stderr = client.communicate(timeout=120)
    assert client.returncode == 0, stderr
    assert "retrying in" in stderr
    result = json.loads(stdout)
    assert result["sha256"] == digest and result["verified"] is True


def test_rate_and_time_left_say_retrying_while_waiting() -> None:
    progress = Progress()
    task_id = progress.add_task("f", total=100)
    progress.update(task_id, completed=50)
    task = progress.tasks[0]
    assert "retrying" not in str(SpeedColumn().render(task))
    progress.update(task_id, retrying=True)
    assert str(SpeedColumn().render(task)) == "retrying"
    assert str(EtaColumn().render(task)) == "retrying"
    progress.update(task_id, retrying=False)
    assert "retrying" not in str(EtaColumn().render(task))
