"""Fixtures that run each contract test once per backend of tests/contract/backends.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from freight.core.blobs import BlobStore
from freight.core.ports import SessionRepository
from tests.contract.backends import BLOB_BACKENDS, SESSION_BACKENDS, BlobBackend, SessionBackend


@pytest.fixture(params=sorted(SESSION_BACKENDS))
def session_backend(request: pytest.FixtureRequest) -> SessionBackend:
    backend = SESSION_BACKENDS[request.param]
    reason = backend.unavailable()
    if reason:
        pytest.skip(reason)
    return backend


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
    backend = BLOB_BACKENDS[request.param]
    reason = backend.unavailable()
    if reason:
        pytest.skip(reason)
    return backend


@pytest.fixture
def place(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
async def sessions(
    session_backend: SessionBackend, place: Path
) -> AsyncIterator[SessionRepository]:
    repository = await session_backend.open(place)
    yield repository
    await repository.close()


@pytest.fixture
async def blobs(blob_backend: BlobBackend, place: Path) -> AsyncIterator[BlobStore]:
    store = await blob_backend.open(place)
    yield store
    await store.close()
