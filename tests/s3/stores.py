"""Opening an S3Blobs on the test SeaweedFS and PostgreSQL (one per simulated node)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiobotocore.session import get_session

from freight.storage.pg_parts import open_pg_part_table
from freight.storage.s3_blobs import MIN_PART_SIZE, S3Blobs
from tests.s3.seaweed import Seaweed

# The smallest part S3 allows keeps the tests' blobs small while crossing many parts.
TEST_PART_SIZE = MIN_PART_SIZE
TEST_MAX_SIZE = 10_000 * TEST_PART_SIZE


async def open_store(
    seaweed: Seaweed, bucket: str, spool: Path, dsn: str, **options: Any
) -> S3Blobs:
    """A node: its own spool and database pool, the shared bucket and database."""
    return await S3Blobs.open(
        endpoint=seaweed.endpoint,
        access_key=seaweed.access_key,
        secret_key=seaweed.secret_key,
        bucket=bucket,
        spool_dir=spool,
        open_table=lambda: open_pg_part_table(dsn),
        max_size=options.pop("max_size", TEST_MAX_SIZE),
        part_size=options.pop("part_size", TEST_PART_SIZE),
        **options,
    )


@contextlib.asynccontextmanager
async def s3_client(seaweed: Seaweed) -> AsyncIterator[Any]:
    """A plain aiobotocore client of the test store (what a bare S3 user would run)."""
    async with get_session().create_client(
        "s3",
        endpoint_url=seaweed.endpoint,
        region_name="us-east-1",
        aws_access_key_id=seaweed.access_key,
        aws_secret_access_key=seaweed.secret_key,
    ) as client:
        yield client
