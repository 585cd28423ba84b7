"""Expired uploads leave nothing in the bucket: no multipart upload, no fragment, no object;
a finished file beside them stays."""

from __future__ import annotations

import asyncio
import json
import time

from aiobotocore.session import get_session

from tests.fleet.conftest import PART_SIZE, Fleet, MiB
from tests.integration.helpers import PatternStream, create_upload, download, patch_stream, request

EXPIRY = ["--expire-after", "3", "--expire-unstarted", "3", "--sweep-interval", "0.5"]


def bucket_listing(fleet: Fleet) -> tuple[list[str], list[str]]:
    """Every object key and every in-progress multipart upload's key in the bucket."""

    async def listing() -> tuple[list[str], list[str]]:
        client = get_session().create_client(
            "s3",
            endpoint_url=fleet.seaweed.endpoint,
            aws_access_key_id=fleet.seaweed.access_key,
            aws_secret_access_key=fleet.seaweed.secret_key,
            region_name="us-east-1",
        )
        async with client as s3:
            objects: list[str] = []
            async for page in s3.get_paginator("list_objects_v2").paginate(Bucket=fleet.bucket):
                objects += [item["Key"] for item in page.get("Contents", [])]
            uploads = await s3.list_multipart_uploads(Bucket=fleet.bucket)
            assert not uploads.get("IsTruncated")
            return objects, [item["Key"] for item in uploads.get("Uploads", [])]

    return asyncio.run(listing())


def mentioning(keys: list[str], ids: list[str]) -> list[str]:
    return [key for key in keys if any(upload_id in key for upload_id in ids)]


def chunk_upload_with_a_middle_chunk(url: str, source: PatternStream) -> str:
    body = json.dumps({"name": "c.bin", "size": source.size, "chunk_size": PART_SIZE}).encode()
    made = request("POST", f"{url}/api/uploads", {"Content-Type": "application/json"}, body)
    assert made.status == 201, made.body
    created = made.json()
    assert isinstance(created, dict)
    upload_id = str(created["id"])
    chunk = b"".join(source.chunks(PART_SIZE, 2 * PART_SIZE))
    put = request("PUT", f"{url}/api/uploads/{upload_id}/chunks/1", {}, chunk)
    assert put.status == 200, put.body
    return upload_id


def test_expired_uploads_leave_no_multipart_upload_and_no_fragment(fleet: Fleet) -> None:
    a, b = fleet.start_node(*EXPIRY), fleet.start_node(*EXPIRY)
    source = PatternStream(3 * PART_SIZE + 5, seed=51)
    # A part and a tail fragment; nothing at all; the middle part of a chunk upload.
    partial = create_upload(a.url, source.size)
    assert (
        patch_stream(partial, 0, source.chunks(0, PART_SIZE + MiB), PART_SIZE + MiB).status == 204
    )
    unstarted = create_upload(b.url, source.size)
    chunked = chunk_upload_with_a_middle_chunk(b.url, source)
    kept_source = PatternStream(PART_SIZE + 77, seed=52)
    kept = create_upload(b.url, kept_source.size)
    assert patch_stream(kept, 0, kept_source.chunks(), kept_source.size).status == 204
    expiring = [partial.rsplit("/", 1)[1], unstarted.rsplit("/", 1)[1], chunked]
    kept_id = kept.rsplit("/", 1)[1]

    objects, multipart = bucket_listing(fleet)
    # What the listing is expected to lose: the bytes of the two uploads that received some.
    assert len(mentioning(multipart, expiring[0::2])) == 2, multipart
    assert mentioning(objects, expiring[:1]), objects

    deadline = time.monotonic() + 30
    while any(
        request("HEAD", a.url + f"/files/{i}", {"Tus-Resumable": "1.0.0"}).status != 404
        for i in expiring[:2]
    ):
        assert time.monotonic() < deadline, "the uploads did not expire"
        time.sleep(0.25)
    while True:
        objects, multipart = bucket_listing(fleet)
        left = mentioning(objects, expiring) + mentioning(multipart, expiring)
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert left == [], f"left in the bucket after expiry: {left}"
    assert request("GET", f"{b.url}/api/uploads/{chunked}").status == 404
    assert mentioning(objects, [kept_id]), "the finished file is gone"
    fetched = download(a.url + f"/files/{kept_id}")
    assert fetched.status == 200, (fetched.status, dict(fetched.headers))
    assert (fetched.size, fetched.sha256) == (kept_source.size, kept_source.sha256())
