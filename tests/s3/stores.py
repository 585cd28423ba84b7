"""Opening an S3Blobs on the test SeaweedFS (one per simulated node)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from freight.storage.s3_blobs import MIN_PART_SIZE, S3Blobs
from tests.s3.seaweed import Seaweed

# The smallest part S3 allows keeps the tests' blobs small while crossing many parts.
TEST_PART_SIZE = MIN_PART_SIZE


async def open_store(seaweed: Seaweed, bucket: str, spool: Path, **options: Any) -> S3Blobs:
    return await S3Blobs.open(
        endpoint=seaweed.endpoint,
        access_key=seaweed.access_key,
        secret_key=seaweed.secret_key,
        bucket=bucket,
        spool_dir=spool,
        part_size=options.pop("part_size", TEST_PART_SIZE),
        **options,
    )
