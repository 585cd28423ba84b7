"""The readiness probe of S3Blobs: a write under the prefix, and a typed error without one."""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path

import pytest
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from freight.errors import StorageUnavailable
from freight.storage.s3_blobs import S3Blobs
from tests.s3.seaweed import Seaweed
from tests.s3.stores import open_store


async def test_the_probe_writes_and_leaves_nothing(s3_blobs: S3Blobs) -> None:
    await s3_blobs.probe()
    listing = await s3_blobs.parts.client.list_objects_v2(Bucket=s3_blobs.bucket)
    assert listing.get("KeyCount", 0) == 0


async def test_a_missing_bucket_is_unavailable(seaweed: Seaweed, tmp_path: Path) -> None:
    store = await open_store(seaweed, "freight-no-such-bucket", tmp_path / "spool")
    try:
        with pytest.raises(StorageUnavailable):
            await store.probe()
    finally:
        await store.close()


async def test_an_unreachable_store_is_unavailable(tmp_path: Path) -> None:
    with socket.socket() as listener:  # a port nothing listens on once it is closed
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
    # One attempt: the client's retries with backoff are not what is tested.
    stack = contextlib.AsyncExitStack()
    client = await stack.enter_async_context(
        get_session().create_client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{port}",
            region_name="us-east-1",
            aws_access_key_id="nobody",
            aws_secret_access_key="nothing",
            config=AioConfig(retries={"max_attempts": 1}),
        )
    )
    store = S3Blobs(client, stack, "freight", tmp_path / "spool")
    try:
        with pytest.raises(StorageUnavailable):
            await store.probe()
    finally:
        await store.close()
