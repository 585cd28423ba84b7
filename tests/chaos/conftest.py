"""Fixtures of the chaos suite: its scale, its results file, proxies, an in-process client loop.

pytest runs with ``--import-mode=importlib``, which puts no test folder on ``sys.path``; this
folder is added here so the tests can import their harness modules.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from proxy import LinkProxy
from runner import ClientRun
from scale import Results, Scale, current_scale


@pytest.fixture(scope="session")
def scale() -> Scale:
    return current_scale()


@pytest.fixture(scope="session")
def chaos_results(scale: Scale) -> Iterator[Results]:
    results = Results(scale)
    yield results
    written = results.write()
    if written is not None:
        print(f"\nchaos figures: {written}")


@pytest.fixture
def link_proxy() -> Iterator[Callable[..., LinkProxy]]:
    """Start proxies: ``link_proxy(upstream_port, cut_range=..., rate=...)``."""
    started: list[LinkProxy] = []

    def start(upstream_port: int, **options: object) -> LinkProxy:
        proxy = LinkProxy(upstream_port, **options).start()  # type: ignore[arg-type]
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()


@pytest.fixture
def client_run() -> Iterator[Callable[..., ClientRun]]:
    """Start uploads on a background loop; unfinished ones are cancelled at teardown."""
    runs: list[ClientRun] = []

    def start(*args: object, **kwargs: object) -> ClientRun:
        run = ClientRun(*args, **kwargs)  # type: ignore[arg-type]
        runs.append(run)
        return run.start()

    yield start
    for run in runs:
        run.close()
