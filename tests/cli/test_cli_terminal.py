"""What a terminal shows: a progress display, and Ctrl-C said on a line of its own."""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from cli_support import FREIGHT, MiB, make_file

_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _read_for(fd: int, seconds: float) -> bytes:
    out = b""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    return out


def test_ctrl_c_is_said_on_its_own_line(
    freight_server: Any, tmp_path: Path, env: dict[str, str]
) -> None:
    source = tmp_path / "f.bin"
    make_file(source, 8 * MiB)
    controller, terminal = pty.openpty()
    client = subprocess.Popen(
        [*FREIGHT, "send", str(source), freight_server.url, "--limit-rate", "1M"],
        stdin=terminal, stdout=terminal, stderr=terminal, env={**env, "COLUMNS": "100"},
    )  # fmt: skip
    os.close(terminal)
    try:
        shown = _read_for(controller, 3.0)
        assert b"MiB" in shown, shown  # the progress display is up, in binary units
        client.send_signal(signal.SIGINT)
        client.wait(30)
        shown += _read_for(controller, 1.0)
    finally:
        os.close(controller)
        if client.poll() is None:
            client.kill()
    assert client.returncode == 130
    lines = re.split(r"[\r\n]+", _ESCAPES.sub("", shown.decode("utf-8", "replace")))
    said = [line for line in lines if "Interrupted." in line]
    assert said and all(line.startswith("Interrupted.") for line in said), lines[-6:]
