"""``docs/freight.service`` is a unit systemd accepts, hardened, and consistent with the CLI.

``systemd-analyze verify`` needs ExecStart's binary to exist, so the unit is checked as a
copy pointing at this environment's ``freight`` script. It exits 0 on unknown keys and bad
values (it only warns), so any output at all fails the test.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

UNIT = Path(__file__).resolve().parents[1] / "docs" / "freight.service"
INSTALLED = "/usr/local/bin/freight"
REQUIRED = {
    "DynamicUser": "yes",
    "StateDirectory": "freight",
    "ProtectSystem": "strict",
    "ReadWritePaths": "/var/lib/freight",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "NoNewPrivileges": "yes",
    "LimitNOFILE": "65536",
    "KillSignal": "SIGTERM",
    "ExecReload": "/bin/kill -HUP $MAINPID",
}


def settings() -> dict[str, str]:
    found: dict[str, str] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            found[key.strip()] = value.strip()
    return found


def freight_script() -> str:
    beside = Path(sys.executable).with_name("freight")
    return str(beside) if beside.exists() else shutil.which("freight") or sys.executable


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("systemd-analyze")
    assert tool is not None, "systemd-analyze is needed to check the unit (package: systemd)"
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=60, check=False)


def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    text = UNIT.read_text()
    assert INSTALLED in text
    copy = tmp_path / "freight.service"
    copy.write_text(text.replace(INSTALLED, freight_script()))
    verified = analyze("verify", "--man=no", str(copy))
    assert verified.returncode == 0 and not verified.stdout + verified.stderr, verified


def test_the_unit_is_hardened(tmp_path: Path) -> None:
    found = settings()
    for key, value in REQUIRED.items():
        assert found.get(key) == value, key
    copy = tmp_path / "freight.service"
    copy.write_text(UNIT.read_text().replace(INSTALLED, freight_script()))
    report = analyze("security", "--offline=yes", str(copy))
    match = re.search(r"Overall exposure level for \S+: ([\d.]+)", report.stdout + report.stderr)
    assert match, report
    assert float(match.group(1)) <= 4.0, report.stdout  # 8.3 with only the directives above


def test_systemd_waits_longer_than_freight_takes_to_stop() -> None:
    found = settings()
    command = shlex.split(found["ExecStart"])
    assert command[:2] == [INSTALLED, "serve"]
    timeout = float(command[command.index("--shutdown-timeout") + 1])
    assert float(found["TimeoutStopSec"]) > timeout


def test_every_option_in_exec_start_exists() -> None:
    command = shlex.split(settings()["ExecStart"])
    options = [word for word in command if word.startswith("--")]
    usage = subprocess.run(
        [sys.executable, "-m", "freight", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    for option in options:
        assert option in usage, option
