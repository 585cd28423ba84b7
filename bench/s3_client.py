"""A plain aiobotocore client for the S3 section: the direct uploader, and the bucket chores.

``python -m bench.s3_client put ENDPOINT BUCKET KEY FILE --part-size N --concurrency C``
sends FILE straight to the store as one multipart upload (create, the parts with at most C
in flight, complete) and prints ``{"seconds": ..., "cpu_seconds": ..., "size": ...}``: its
own time and CPU for the upload, start-up and imports excluded. That is the ceiling a server
in front of the same store is measured against. It runs as a process of its own, like curl.
Each part is read with ``os.pread`` into one buffer per part in flight; over plain HTTP
payload signing and default request checksums are off, as in freight's store (integrity is
checked after the upload by reading the object back). Credentials come from the environment.

In the benchmark's own process, with the benchmark's SeaweedFS keys: :func:`create_buckets`,
:func:`list_objects`, :func:`object_sha256` and :func:`delete_objects` prepare a bucket per
target and find, check and remove what an upload left there.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

from bench.s3_services import ACCESS_KEY, SECRET_KEY

__all__ = ["create_buckets", "delete_objects", "list_objects", "object_sha256", "upload"]

KEY_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
BENCH_KEYS = (ACCESS_KEY, SECRET_KEY)


@contextlib.asynccontextmanager
async def _client(
    endpoint: str, connections: int = 10, keys: tuple[str, str] | None = None
) -> AsyncIterator[Any]:
    """A client of ``endpoint`` with ``keys``, else the environment's (``put`` runs alone)."""
    from aiobotocore.config import AioConfig
    from aiobotocore.session import get_session

    plain_http = endpoint.startswith("http://")
    config = AioConfig(
        signature_version="s3v4",
        s3={"addressing_style": "path", "payload_signing_enabled": not plain_http},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        max_pool_connections=connections,
    )
    access, secret = keys or tuple(os.environ.get(name, "") for name in KEY_ENV)
    async with get_session().create_client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=access,
        aws_secret_access_key=secret,
        config=config,
    ) as client:
        yield client


async def _upload(
    endpoint: str, bucket: str, key: str, path: str, part_size: int, concurrency: int
) -> dict[str, float]:
    size = os.path.getsize(path)
    async with _client(endpoint, concurrency + 2) as s3:
        fd = os.open(path, os.O_RDONLY)
        try:
            began, cpu = time.perf_counter(), time.process_time()
            created = await s3.create_multipart_upload(Bucket=bucket, Key=key)
            upload_id = created["UploadId"]
            slots = asyncio.Semaphore(concurrency)

            async def part(number: int) -> dict[str, Any]:
                async with slots:
                    offset = (number - 1) * part_size
                    body = await asyncio.to_thread(os.pread, fd, part_size, offset)
                    sent = await s3.upload_part(
                        Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body
                    )
                    return {"PartNumber": number, "ETag": sent["ETag"]}

            count = max(1, -(-size // part_size))
            parts = await asyncio.gather(*(part(n) for n in range(1, count + 1)))
            await s3.complete_multipart_upload(
                Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
            seconds, cpu = time.perf_counter() - began, time.process_time() - cpu
            return {"seconds": seconds, "cpu_seconds": cpu, "size": size}
        finally:
            os.close(fd)


def upload(
    endpoint: str, bucket: str, key: str, path: str, part_size: int, concurrency: int
) -> dict[str, float]:
    return asyncio.run(_upload(endpoint, bucket, key, path, part_size, concurrency))


# --- bucket chores, in the benchmark's process ---------------------------------------------


def create_buckets(endpoint: str, buckets: Iterable[str]) -> None:
    async def create() -> None:
        async with _client(endpoint, keys=BENCH_KEYS) as s3:
            for bucket in buckets:
                await s3.create_bucket(Bucket=bucket)

    asyncio.run(create())


def list_objects(endpoint: str, bucket: str) -> dict[str, int]:
    """Every object of ``bucket`` with its size."""

    async def listing() -> dict[str, int]:
        found: dict[str, int] = {}
        async with _client(endpoint, keys=BENCH_KEYS) as s3:
            async for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
                found.update({o["Key"]: int(o["Size"]) for o in page.get("Contents", [])})
        return found

    return asyncio.run(listing())


def object_sha256(endpoint: str, bucket: str, key: str) -> str:
    async def digest() -> str:
        hasher = hashlib.sha256()
        async with _client(endpoint, keys=BENCH_KEYS) as s3:
            reply = await s3.get_object(Bucket=bucket, Key=key)
            body = reply["Body"]
            try:
                while block := await body.read(1 << 20):
                    hasher.update(block)
            finally:
                body.close()
        return hasher.hexdigest()

    return asyncio.run(digest())


def delete_objects(endpoint: str, bucket: str, keys: Iterable[str]) -> None:
    async def delete() -> None:
        async with _client(endpoint, keys=BENCH_KEYS) as s3:
            for key in keys:
                await s3.delete_object(Bucket=bucket, Key=key)
            pending = await s3.list_multipart_uploads(Bucket=bucket)
            for stale in pending.get("Uploads", []):
                await s3.abort_multipart_upload(
                    Bucket=bucket, Key=stale["Key"], UploadId=stale["UploadId"]
                )

    asyncio.run(delete())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.s3_client")
    commands = parser.add_subparsers(dest="command", required=True)
    put = commands.add_parser("put", help="one multipart upload of FILE; prints JSON")
    for name in ("endpoint", "bucket", "key", "file"):
        put.add_argument(name)
    put.add_argument("--part-size", type=int, default=8 << 20)
    put.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args(argv)
    reply = upload(
        args.endpoint, args.bucket, args.key, args.file, args.part_size, args.concurrency
    )
    print(json.dumps(reply))
    return 0


if __name__ == "__main__":
    sys.exit(main())
