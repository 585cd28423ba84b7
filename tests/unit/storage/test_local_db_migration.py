"""A database from a version that kept protocol state in the client's metadata.

Those versions wrote the chunk API's ``chunk_size`` and a declared ``sha256`` into
``metadata``; opening such a database moves them to their own columns, and leaves every
other row's metadata exactly as the client sent it.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from freight.storage.local_db import SessionTable, private_state

SHA = "AB" * 32
# The table as the previous version created it: no chunk_size / declared_sha256 columns.
OLD_SCHEMA = """
CREATE TABLE uploads (
    id TEXT PRIMARY KEY, length INTEGER, metadata TEXT NOT NULL, received TEXT NOT NULL,
    state TEXT NOT NULL, hashed_offset INTEGER NOT NULL, hash_state BLOB,
    created REAL NOT NULL, expires REAL, concat_kind TEXT, concat_parts TEXT NOT NULL,
    sha256 TEXT, finished REAL, client TEXT, received_bytes INTEGER NOT NULL DEFAULT 0,
    used_by TEXT
);
"""
OLD_ROWS = {
    "chunks": {"filename": "a.bin", "chunk_size": "4096", "sha256": SHA},
    "chunks-no-sha": {"filename": "a.bin", "chunk_size": "4096"},
    "tcp": {"filename": None, "sha256": SHA.lower()},
    "tus-extra-key": {"filename": "a.bin", "chunk_size": "4096", "note": "mine"},
    "tus-bad-sha": {"filename": "a.bin", "sha256": "not a digest"},
    "tus-bad-size": {"filename": "a.bin", "chunk_size": "0"},
    "tus-plain": {"filename": "a.bin", "empty": None},
}


def _old_database(path: Path) -> None:
    db = sqlite3.connect(path)
    db.executescript(OLD_SCHEMA)
    for upload_id, metadata in OLD_ROWS.items():
        db.execute(
            "INSERT INTO uploads (id, length, metadata, received, state, hashed_offset,"
            " created, concat_parts) VALUES (?, 8192, ?, '[]', 'receiving', 0, 1.0, '[]')",
            (upload_id, json.dumps(metadata)),
        )
    db.commit()
    db.close()


def test_old_rows_move_protocol_state_to_its_columns(tmp_path: Path) -> None:
    path = tmp_path / "freight.db"
    _old_database(path)
    table = SessionTable(path, durable=False, on_full=lambda: False)
    try:
        got = {s.id: (s.metadata, s.chunk_size, s.declared_sha256) for s in table.all()}
    finally:
        table.close()
    assert got == {
        "chunks": ({"filename": "a.bin"}, 4096, SHA.lower()),
        "chunks-no-sha": ({"filename": "a.bin"}, 4096, None),
        "tcp": ({"filename": None}, None, SHA.lower()),
        **{key: (OLD_ROWS[key], None, None) for key in OLD_ROWS if key.startswith("tus")},
    }


def test_a_second_opening_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "freight.db"
    _old_database(path)
    SessionTable(path, durable=False, on_full=lambda: False).close()
    # A client may send these keys to a migrated server: they are its own metadata now.
    db = sqlite3.connect(path)
    db.execute(
        "UPDATE uploads SET metadata = ? WHERE id = 'tus-plain'", (json.dumps(OLD_ROWS["chunks"]),)
    )
    db.commit()
    db.close()
    table = SessionTable(path, durable=False, on_full=lambda: False)
    try:
        session = next(s for s in table.all() if s.id == "tus-plain")
    finally:
        table.close()
    assert (session.metadata, session.chunk_size) == (OLD_ROWS["chunks"], None)


@pytest.mark.parametrize(
    "metadata",
    [{}, {"filename": "x"}, {"chunk_size": "5"}, {"filename": "x", "sha256": None}],
)
def test_other_shapes_are_left_alone(metadata: dict[str, str | None]) -> None:
    assert private_state(metadata) is None
