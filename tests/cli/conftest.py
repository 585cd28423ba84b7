"""Fixtures for the CLI tests (the ``freight_server`` fixtures live in tests/conftest.py).

pytest runs with ``--import-mode=importlib``, which puts no test folder on ``sys.path``; this
folder is added here so the tests can import their helpers from ``cli_support``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from cli_support import ChaosProxy, FakeFileServer, cli_env


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    """A private client state directory, so tests never see each other's resume state."""
    return tmp_path / "state"


@pytest.fixture
def env(state_dir: Path) -> dict[str, str]:
    return cli_env(state_dir)


@pytest.fixture
def chaos_proxy() -> Iterator[Callable[[int], ChaosProxy]]:
    """Start proxies to a given upstream port: ``chaos_proxy(server.port)``."""
    started: list[ChaosProxy] = []

    def start(upstream_port: int) -> ChaosProxy:
        proxy = ChaosProxy(upstream_port).start()
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()


@pytest.fixture
def fake_files() -> Iterator[FakeFileServer]:
    server = FakeFileServer().start()
    yield server
    server.stop()
