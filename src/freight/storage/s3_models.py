"""The part of botocore's data an S3 client of freight needs, and nothing else.

botocore parses its whole ``endpoints.json`` (every service in every region, 1.2 MB) and
the complete S3 model with its documentation (1.3 MB) into Python objects for each client:
11 MiB of a node's memory, measured, for a client that uses a few operations against one
endpoint. This module writes lean copies of those files, only S3's endpoints and only the
operations :data:`OPERATIONS` with the shapes they reach, without documentation, once per
botocore version, in a child process (so the full files are never parsed in the node), and
returns the directory to put first on the client's data path. With it a client costs about
3 MiB.

S3's endpoint rule set (900 KB of JSON: access points, S3 Express, Outposts, FIPS, dual
stack, virtual hosts) is replaced by the two rules freight's client reaches: its endpoint
is always given (AWS's own is spelled out by the caller) and addressed path-style, so a
request goes to the endpoint's path plus the bucket. That keeps another 1.4 MiB out of a
node (measured: a client 2.5 MiB above its imports, 1.1 with the lean rules).
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["OPERATIONS", "lean_data_path"]

log = logging.getLogger(__name__)

# Every S3 operation freight (and its tests) calls.
OPERATIONS = (
    "AbortMultipartUpload",
    "CompleteMultipartUpload",
    "CopyObject",
    "CreateBucket",
    "CreateMultipartUpload",
    "DeleteBucket",
    "DeleteObject",
    "DeleteObjects",
    "GetObject",
    "HeadBucket",
    "HeadObject",
    "ListMultipartUploads",
    "ListObjectsV2",
    "ListParts",
    "PutObject",
    "UploadPart",
    "UploadPartCopy",
)
# Bumped whenever what the lean copies hold changes, so older copies are not reused.
_FORMAT = 3
_DROPPED_KEYS = frozenset({"documentation", "documentationUrl", "examples"})


def lean_data_path(cache_root: Path) -> Path | None:
    """A directory of lean botocore data for this botocore version (made if missing), or
    None if it cannot be made (the client then loads botocore's own data)."""
    import botocore

    target = cache_root / f"botocore-{botocore.__version__}-lean{_FORMAT}"
    if (target / "done").exists():
        return target
    try:
        subprocess.run(
            [sys.executable, "-m", __name__, str(target)],
            check=True,
            capture_output=True,
            timeout=120,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("using botocore's full data (lean copies could not be made: %s)", exc)
        return None
    return target


def _write_lean_data(target: Path) -> None:
    import botocore
    import botocore.loaders

    source = Path(botocore.__file__).parent / "data"
    loader = botocore.loaders.create_loader()
    model = loader.load_service_model("s3", "service-2")
    version = model["metadata"]["apiVersion"]
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".lean-", dir=target.parent))
    _dump(staging / "s3" / version / "service-2.json", _lean_model(model))
    _dump(staging / "endpoints.json", _s3_endpoints(_read(source / "endpoints.json")))
    rules = loader.load_service_model("s3", "endpoint-rule-set-1", version)
    _dump(staging / "s3" / version / "endpoint-rule-set-1.json", _path_style_rules(rules))
    (staging / "done").write_text("ok\n")
    try:
        os.rename(staging, target)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)  # another node made it first: as good


def _lean_model(model: dict[str, Any]) -> dict[str, Any]:
    shapes = model["shapes"]
    kept: set[str] = set()

    def reach(name: str) -> None:
        if name in kept:
            return
        kept.add(name)
        shape = shapes[name]
        for member in shape.get("members", {}).values():
            reach(member["shape"])
        for key in ("member", "key", "value"):
            if key in shape:
                reach(shape[key]["shape"])

    operations = {name: model["operations"][name] for name in OPERATIONS}
    for operation in operations.values():
        for key in ("input", "output"):
            if key in operation:
                reach(operation[key]["shape"])
        for error in operation.get("errors", ()):
            reach(error["shape"])
    # Documentation goes from operations and shapes only: botocore reads it elsewhere (the
    # client context parameters).
    return {
        **model,
        "operations": _undocumented(operations),
        "shapes": _undocumented({n: shapes[n] for n in kept}),
    }


def _undocumented(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _undocumented(v) for k, v in value.items() if k not in _DROPPED_KEYS}
    if isinstance(value, list):
        return [_undocumented(v) for v in value]
    return value


def _s3_endpoints(endpoints: dict[str, Any]) -> dict[str, Any]:
    for partition in endpoints["partitions"]:
        partition["services"] = {k: v for k, v in partition["services"].items() if k == "s3"}
    return endpoints


def _path_style_rules(rules: dict[str, Any]) -> dict[str, Any]:
    """S3's endpoint rules for a client that always names its endpoint and addresses
    buckets by path: the same URL and signing the full rule set gives it."""
    kept = ("Bucket", "Region", "Endpoint")
    parameters = {name: _undocumented(rules["parameters"][name]) for name in kept}
    url = {"fn": "parseURL", "argv": [{"ref": "Endpoint"}], "assign": "url"}
    has_endpoint = {"fn": "isSet", "argv": [{"ref": "Endpoint"}]}
    signing = {
        "authSchemes": [
            {
                "disableDoubleEncoding": True,
                "name": "sigv4",
                "signingName": "s3",
                "signingRegion": "{Region}",
            }
        ]
    }
    in_bucket = {
        "conditions": [
            has_endpoint,
            {"fn": "isSet", "argv": [{"ref": "Bucket"}]},
            url,
            {"fn": "uriEncode", "argv": [{"ref": "Bucket"}], "assign": "uri_encoded_bucket"},
        ],
        "endpoint": {
            "url": "{url#scheme}://{url#authority}{url#normalizedPath}{uri_encoded_bucket}",
            "properties": signing,
            "headers": {},
        },
        "type": "endpoint",
    }
    no_bucket = {
        "conditions": [has_endpoint, url],
        "endpoint": {"url": {"ref": "Endpoint"}, "properties": signing, "headers": {}},
        "type": "endpoint",
    }
    missing = {"conditions": [], "error": "an S3 endpoint URL is required", "type": "error"}
    chosen = [in_bucket, no_bucket, missing]
    return {"version": rules["version"], "parameters": parameters, "rules": chosen}


def _read(path: Path) -> dict[str, Any]:
    if path.exists():
        return json.loads(path.read_text())  # type: ignore[no-any-return]
    with gzip.open(path.with_name(path.name + ".gz")) as file:
        return json.load(file)  # type: ignore[no-any-return]


def _dump(path: Path, value: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, separators=(",", ":")))


if __name__ == "__main__":
    _write_lean_data(Path(sys.argv[1]))
