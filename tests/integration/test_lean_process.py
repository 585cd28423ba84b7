"""A running server loads no extension that costs more memory than it saves time: the
C++ build of frozenlist maps the C++ runtime (1.2 MiB of RSS) for lists aiohttp only walks."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import ServerProcess

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/maps").exists(), reason="the mappings are read from /proc"
)


def mapped_files(pid: int) -> set[str]:
    lines = Path(f"/proc/{pid}/maps").read_text().splitlines()
    return {Path(line.split()[-1]).name for line in lines if line.split()[-1].startswith("/")}


def test_the_server_maps_no_cpp_runtime(freight_server: ServerProcess) -> None:
    mapped = mapped_files(freight_server.pid)
    assert any(name.startswith("libpython") or "python" in name for name in mapped), mapped
    assert not [name for name in mapped if name.startswith(("libstdc++", "_frozenlist"))]
