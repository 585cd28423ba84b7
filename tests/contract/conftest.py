"""Fixtures that run each contract test once per backend of tests/contract/backends.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from freight.core.blobs import BlobStore
from freight.core.ports import SessionRepository
from tests.contract.backends import BLOB_BACKENDS, SESSION_BACKENDS, BlobBackend, SessionBackend


@pytest.fixture(params=sorted(SESSION_BACKENDS))
def session_backend(request: pytest.FixtureRequest) -> SessionBackend:
    return SESSION_BACKENDS[request.param]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Blob tests run over every blob backend, or for a test marked ``ability("X")`` over
    those that have ability X (the others have nothing of it to test)."""
    if "blob_backend" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("ability")
    needed = set(marker.args) if marker else set()
    names = [name for name in sorted(BLOB_BACKENDS) if needed <= BLOB_BACKENDS[name].abilities]
    metafunc.parametrize("blob_backend", names, indirect=True)


@pytest.fixture
def blob_backend(request: pytest.FixtureRequest) -> BlobBackend:
    return BLOB_BACKENDS[request.param]


@pytest.fixture
def tmp_place(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def session_place(session_backend: SessionBackend, request: pytest.FixtureRequest) -> Any:
    """Where this test's session backend opens (only that backend's service is started)."""
    return request.getfixturevalue(session_backend.place)


@pytest.fixture
def blob_place(blob_backend: BlobBackend, request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue(blob_backend.place)


@pytest.fixture
async def sessions(
    session_backend: SessionBackend, session_place: Any
) -> AsyncIterator[SessionRepository]:
    repository = await session_backend.open(session_place)
    yield repository
    await repository.close()


@pytest.fixture
async def blobs(blob_backend: BlobBackend, blob_place: Any) -> AsyncIterator[BlobStore]:
    store = await blob_backend.open(blob_place)
    yield store
    await store.close()
