"""Sessions as rows of the local backend's ``uploads`` table, and back.

Ranges, metadata and concatenation parts are JSON text; ``received_bytes`` is what the
received ranges add up to, kept beside them so aggregates need not parse them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from typing import Any

from freight.core.ports import SessionField
from freight.core.rangeset import RangeSet
from freight.core.session import ConcatKind, UploadSession, UploadState

__all__ = ["COLUMNS", "from_row", "private_state", "to_row", "update_values"]

COLUMNS = (
    "id",
    "length",
    "metadata",
    "received",
    "state",
    "hashed_offset",
    "hash_state",
    "created",
    "expires",
    "concat_kind",
    "concat_parts",
    "sha256",
    "finished",
    "client",
    "received_bytes",
    "used_by",
    "chunk_size",
    "declared_sha256",
    "owner",
)
UPDATABLE: frozenset[str] = frozenset(
    ("length", "expires", "state", "hashed_offset", "hash_state", "sha256", "finished", "used_by")
)


def update_values(session: UploadSession, fields: Collection[SessionField]) -> dict[str, Any]:
    """The column values of ``fields`` of ``session`` (each field is its own column)."""
    unknown = set(fields) - UPDATABLE
    if unknown:
        raise ValueError(f"not updatable: {sorted(unknown)}")
    values = dict(zip(COLUMNS, to_row(session), strict=True))
    return {name: values[name] for name in sorted(set(fields))}


def to_row(session: UploadSession) -> tuple[Any, ...]:
    return (
        session.id,
        session.length,
        json.dumps(session.metadata),
        json.dumps(session.received.to_list()),
        session.state.value,
        session.hashed_offset,
        session.hash_state,
        session.created,
        session.expires,
        session.concat_kind.value if session.concat_kind else None,
        json.dumps(list(session.concat_parts)),
        session.sha256,
        session.finished,
        session.client,
        session.received.total(),
        session.used_by,
        session.chunk_size,
        session.declared_sha256,
        session.owner,
    )


def from_row(row: tuple[Any, ...]) -> UploadSession:
    values = dict(zip(COLUMNS, row, strict=True))
    return UploadSession(
        id=values["id"],
        length=values["length"],
        metadata=json.loads(values["metadata"]),
        created=values["created"],
        expires=values["expires"],
        received=RangeSet.from_list(json.loads(values["received"])),
        state=UploadState(values["state"]),
        hashed_offset=values["hashed_offset"],
        hash_state=values["hash_state"],
        concat_kind=ConcatKind(values["concat_kind"]) if values["concat_kind"] else None,
        concat_parts=tuple(json.loads(values["concat_parts"])),
        sha256=values["sha256"],
        finished=values["finished"],
        client=values["client"],
        used_by=values["used_by"],
        chunk_size=values["chunk_size"],
        declared_sha256=values["declared_sha256"],
        owner=values["owner"],
    )


_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


def private_state(
    metadata: dict[str, str | None],
) -> tuple[dict[str, str | None], int | None, str | None] | None:
    """``(metadata, chunk_size, declared_sha256)`` of a row an older version wrote, or None
    for a row to leave alone.

    Rows do not say which protocol created them, so only the exact shapes those versions
    wrote are moved: the chunk API's ``{filename, chunk_size[, sha256]}`` and TCP's or
    WebSocket's ``{filename, sha256}``, with a positive ``chunk_size`` and a 64-digit hex
    ``sha256``. A tus client that sent exactly such keys cannot be told apart; those
    versions already treated its ``sha256`` as declared (checked at finishing) and let the
    chunk API write to it, so reading it that way changes nothing it relied on.
    """
    keys = set(metadata)
    sha256 = metadata.get("sha256")
    chunk_size = metadata.get("chunk_size")
    if "sha256" in keys and not (sha256 and _HEX64.fullmatch(sha256)):
        return None
    if keys in ({"filename", "chunk_size"}, {"filename", "chunk_size", "sha256"}):
        if not (chunk_size and chunk_size.isdigit() and int(chunk_size) > 0):
            return None
        size: int | None = int(chunk_size)
    elif keys == {"filename", "sha256"}:
        size = None
    else:
        return None
    kept = {"filename": metadata["filename"]}
    return kept, size, sha256.lower() if sha256 else None
