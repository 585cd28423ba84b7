"""The part table of one S3 blob: which parts are uploaded and which fragments are stored.

It lives in the bucket beside the blob (``<id>.state``, JSON), so every node sees the same
table; each change is a read-modify-write guarded by a conditional PUT (``If-Match`` on the
ETag read, ``If-None-Match: *`` on creation) and is retried on a lost race. The table is
the truth because SeaweedFS's ListParts keeps every version of a re-uploaded part and omits
part checksums.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from freight.core.rangeset import RangeSet
from freight.errors import FreightError, UploadNotFound

__all__ = ["PartTable", "TableStore", "client_error_code"]

# Enough for any real contention (a few writers of one upload); a table that keeps losing
# is a fault worth surfacing.
_CAS_ATTEMPTS = 20


def client_error_code(exc: BaseException) -> str | None:
    """The S3 error code of a botocore ``ClientError`` (``None`` for anything else)."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None
    code = response.get("Error", {}).get("Code")
    return str(code) if code is not None else None


@dataclass
class PartTable:
    """``parts``: part number → (ETag, size); ``frags``: absolute byte ranges stored as
    fragment objects (bytes of parts not complete when they were made durable)."""

    upload: str
    part_size: int
    parts: dict[int, tuple[str, int]] = field(default_factory=dict)
    frags: list[tuple[int, int]] = field(default_factory=list)
    etag: str | None = None

    def fragment_ranges(self) -> RangeSet:
        return RangeSet(self.frags)

    def add_frag(self, start: int, end: int) -> None:
        if (start, end) not in self.frags:
            self.frags.append((start, end))

    def encode(self) -> bytes:
        body = {
            "v": 1,
            "upload": self.upload,
            "part_size": self.part_size,
            "parts": {str(n): [etag, size] for n, (etag, size) in sorted(self.parts.items())},
            "frags": [list(r) for r in self.frags],
        }
        return json.dumps(body, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, raw: bytes, etag: str | None) -> PartTable:
        try:
            body = json.loads(raw)
            parts = {int(n): (str(e), int(s)) for n, (e, s) in body["parts"].items()}
            frags = [(int(a), int(b)) for a, b in body["frags"]]
            return cls(str(body["upload"]), int(body["part_size"]), parts, frags, etag)
        except (ValueError, KeyError, TypeError) as exc:
            raise FreightError("the blob's part table is damaged") from exc


class TableStore:
    """Loads and conditionally saves part tables with an aiobotocore S3 client."""

    def __init__(self, client: Any, bucket: str) -> None:
        self._client = client
        self._bucket = bucket

    async def load(self, key: str) -> PartTable | None:
        try:
            response = await self._client.get_object(Bucket=self._bucket, Key=key)
            async with response["Body"] as body:
                raw = await body.read()
        except Exception as exc:
            if client_error_code(exc) in ("NoSuchKey", "404"):
                return None
            raise
        return PartTable.decode(raw, response.get("ETag"))

    async def save(self, key: str, table: PartTable, *, create: bool = False) -> bool:
        """Write ``table`` if nobody changed it since it was read; ``False`` if someone did."""
        condition = {"IfNoneMatch": "*"} if create else {"IfMatch": table.etag or '""'}
        try:
            response = await self._client.put_object(
                Bucket=self._bucket, Key=key, Body=table.encode(), **condition
            )
        except Exception as exc:
            if client_error_code(exc) in (
                "PreconditionFailed",
                "412",
                "ConditionalRequestConflict",
            ):
                return False
            raise
        table.etag = response.get("ETag")
        return True

    async def update(self, key: str, change: Callable[[PartTable], None]) -> PartTable:
        """Apply ``change`` to the stored table, retrying on a concurrent change."""
        for _ in range(_CAS_ATTEMPTS):
            table = await self.load(key)
            if table is None:
                raise UploadNotFound("no such upload")
            change(table)
            if await self.save(key, table):
                return table
        raise FreightError("the blob's part table keeps changing under this writer")
