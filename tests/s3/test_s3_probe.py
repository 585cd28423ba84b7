"""The readiness probe of S3Blobs: a write under the prefix, and a typed error without one."""

from __future__ import annotations

import dataclasses
import socket
from pathlib import Path

import pytest

from freight.errors import StorageUnavailable
from freight.storage.s3_blobs import S3Blobs
from tests.s3.seaweed import Seaweed
from tests.s3.stores import open_store, s3_client


async def test_the_probe_writes_and_leaves_nothing(s3_blobs: S3Blobs, seaweed: Seaweed) -> None:
    await s3_blobs.probe()
    async with s3_client(seaweed) as client:
        listing = await client.list_objects_v2(Bucket=s3_blobs.bucket)
    assert listing.get("KeyCount", 0) == 0


async def test_a_missing_bucket_is_unavailable(
    seaweed: Seaweed, pg_dsn: str, tmp_path: Path
) -> None:
    store = await open_store(seaweed, "freight-no-such-bucket", tmp_path / "spool", pg_dsn)
    try:
        with pytest.raises(StorageUnavailable):
            await store.probe()
    finally:
        await store.close()


async def test_an_unreachable_store_is_unavailable(
    seaweed: Seaweed, pg_dsn: str, tmp_path: Path
) -> None:
    with socket.socket() as listener:  # a port nothing listens on once it is closed
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
    nowhere = dataclasses.replace(seaweed, endpoint=f"http://127.0.0.1:{port}")
    store = await open_store(nowhere, "freight", tmp_path / "spool", pg_dsn)
    try:
        with pytest.raises(StorageUnavailable):
            await store.probe()
    finally:
        await store.close()
