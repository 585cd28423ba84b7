"""Meta-tests: the promises the README, Makefile, CI script and pyproject make to a newcomer."""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
INTEROP = ROOT / "tests" / "interop"


def section(markdown: str, title: str) -> str:
    """The text under the ``## title`` heading, up to the next heading of that level."""
    match = re.search(rf"^## {re.escape(title)}\s*$(.*?)(?=^## |\Z)", markdown, re.M | re.S)
    assert match, f"README has no '## {title}' section"
    return match.group(1)


def fenced_lines(text: str) -> list[str]:
    """Non-empty lines inside fenced code blocks of ``text``."""
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", text, re.M | re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z][\w.-]*)\s*:(?!=)", text, re.M))


def test_quick_start_is_exactly_make_serve_and_make_test() -> None:
    quick_start = section((ROOT / "README.md").read_text(), "Quick start")
    assert fenced_lines(quick_start) == ["make serve", "make test"]


def test_makefile_defines_the_documented_targets() -> None:
    assert {"serve", "test", "lint", "typecheck", "clean"} <= make_targets()


def test_make_dry_run_of_test_runs_every_check() -> None:
    """``make -n`` prints the commands without running the checks themselves."""
    result = subprocess.run(
        ["make", "-n", "-C", str(ROOT), "lint", "typecheck", "pytest"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    for command in ("ruff check src tests", "ruff format --check src tests", "mypy", "pytest"):
        assert command in result.stdout, f"{command!r} missing from:\n{result.stdout}"


def test_ci_script_is_strict_and_ends_with_make_test() -> None:
    script = (ROOT / ".ci" / "run").read_text()
    lines = [
        line.strip()
        for line in script.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert "set -euo pipefail" in lines
    assert lines[-1] in ("make test", "exec make test")
    assert "DEBIAN_FRONTEND=noninteractive" in script
    assert "tools/system-deps install" in lines


def test_system_deps_installs_with_apt_and_names_what_is_missing() -> None:
    script = (ROOT / "tools" / "system-deps").read_text()
    assert "apt-get" in script and "install -y" in script
    for package in ("chromium", "nginx-light", "iperf3", "nodejs", "npm", "curl"):
        assert package in script, f"{package} missing from tools/system-deps"
    done = subprocess.run(
        [str(ROOT / "tools" / "system-deps"), "check"], capture_output=True, text=True, timeout=60
    )
    # On a machine that ran `make test` (which installs them), nothing is missing.
    assert done.returncode == 0, done.stderr


def test_make_test_checks_system_packages_first() -> None:
    text = (ROOT / "Makefile").read_text()
    assert re.search(r"^test: system-deps ", text, re.M)


def test_every_dependency_pins_a_minimum_version() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project = pyproject["project"]
    requirements = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        requirements.extend(extra)
    requirements.extend(pyproject["build-system"]["requires"])
    assert requirements
    unpinned = [req for req in requirements if not re.search(r">=\s*\d", req)]
    assert not unpinned, f"dependencies without a >= minimum: {unpinned}"


@pytest.mark.parametrize("name", ["package.json", "package-lock.json"])
def test_node_harness_is_locked(name: str) -> None:
    data = json.loads((INTEROP / name).read_text())
    if name == "package.json":
        assert "tus-js-client" in data["dependencies"]
    else:
        assert data["packages"]["node_modules/tus-js-client"]["version"].startswith("4.")


def test_generated_directories_are_ignored() -> None:
    ignored = set((ROOT / ".gitignore").read_text().split())
    assert {".venv/", "node_modules/", "freight-data/"} <= ignored
