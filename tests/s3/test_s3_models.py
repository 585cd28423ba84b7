"""The lean copies of botocore's data (:mod:`freight.storage.s3_models`) give a client the
same requests as botocore's own data, and are lean: the endpoint rules cost a node 1.4 MiB
when whole."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import botocore.config
import botocore.session

from freight.storage.s3_models import lean_data_path

ENDPOINTS = (
    "http://127.0.0.1:8333",
    "https://s3.eu-west-1.amazonaws.com",
    "http://store.example:9000/under/a/path",
)
CALLS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("get_object", {"Bucket": "b", "Key": "k/with space"}),
    ("put_object", {"Bucket": "bucket.with.dots", "Key": "k"}),
    ("upload_part", {"Bucket": "b", "Key": "k", "UploadId": "u", "PartNumber": 3}),
    ("head_bucket", {"Bucket": "b"}),
)


def client(endpoint: str, data: Path | None) -> Any:
    session = botocore.session.get_session()
    if data is not None:
        session.get_component("data_loader").search_paths.insert(0, str(data))
    config = botocore.config.Config(signature_version="s3v4", s3={"addressing_style": "path"})
    return session.create_client(
        "s3",
        endpoint_url=endpoint,
        region_name="eu-west-1",
        aws_access_key_id="key",
        aws_secret_access_key="secret",
        config=config,
    )


def test_lean_rules_route_every_call_as_the_full_ones(tmp_path: Path) -> None:
    lean = lean_data_path(tmp_path)
    assert lean is not None
    for endpoint in ENDPOINTS:
        full_client, lean_client = client(endpoint, None), client(endpoint, lean)
        for operation, params in CALLS:
            full = full_client.generate_presigned_url(operation, Params=params, ExpiresIn=60)
            mine = lean_client.generate_presigned_url(operation, Params=params, ExpiresIn=60)
            assert unsigned(mine) == unsigned(full), operation
            assert (
                "eu-west-1/s3/aws4_request" in parse_qs(urlsplit(mine).query)["X-Amz-Credential"][0]
            )


def unsigned(url: str) -> tuple[str, str, str, list[str]]:
    """A presigned URL without what differs by the clock (its date and signature)."""
    parts = urlsplit(url)
    return parts.scheme, parts.netloc, parts.path, sorted(parse_qs(parts.query))


def test_lean_rules_are_small(tmp_path: Path) -> None:
    lean = lean_data_path(tmp_path)
    assert lean is not None
    (rules,) = lean.glob("s3/*/endpoint-rule-set-1.json")
    assert rules.stat().st_size < 4096
