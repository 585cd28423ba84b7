"""The storage package imports on its own (no server, no client needed)."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "module", ["freight.storage.local", "freight.storage", "freight.storage.choice"]
)
def test_storage_imports_on_its_own(module: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", f"import {module}"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr.splitlines()[-1:]
