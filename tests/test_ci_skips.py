"""In CI (``CI=true``) a skipped test fails the run; outside CI it stays a skip."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SKIPPING_TEST = """
import pytest

def test_skipped():
    pytest.skip("no such tool here")

@pytest.mark.xfail(strict=True, reason="a known defect")
def test_known_defect():
    assert False
"""


def _run(tmp_path: Path, ci: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_sample.py").write_text(SKIPPING_TEST)
    (tmp_path / "conftest.py").write_text((ROOT / "tests" / "conftest.py").read_text())
    # The copied conftest imports the service fixtures from this tree's tests package.
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "CI": ci, "PYTHONPATH": path}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-q",
            "--rootdir",
            str(tmp_path),
            "-c",
            os.devnull,
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )


@pytest.mark.parametrize(("ci", "failed"), [("true", True), ("", False)])
def test_a_skip_fails_only_in_ci(tmp_path: Path, ci: str, failed: bool) -> None:
    done = _run(tmp_path, ci)
    if failed:
        assert done.returncode == 1, done.stdout
        assert "1 failed" in done.stdout and "1 xfailed" in done.stdout, done.stdout
        assert "no such tool here" in done.stdout
    else:
        assert done.returncode == 0, done.stdout
        assert "1 skipped" in done.stdout, done.stdout
