"""A database from the version before users: its uploads get no owner (admins see them)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from freight.core.session import UploadSession
from freight.storage.local_db import SessionTable

# The table as the version before users created it: no owner column.
PREVIOUS_SCHEMA = """
CREATE TABLE uploads (
    id TEXT PRIMARY KEY, length INTEGER, metadata TEXT NOT NULL, received TEXT NOT NULL,
    state TEXT NOT NULL, hashed_offset INTEGER NOT NULL, hash_state BLOB,
    created REAL NOT NULL, expires REAL, concat_kind TEXT, concat_parts TEXT NOT NULL,
    sha256 TEXT, finished REAL, client TEXT, received_bytes INTEGER NOT NULL DEFAULT 0,
    used_by TEXT, chunk_size INTEGER, declared_sha256 TEXT
);
"""


def test_old_uploads_have_no_owner_and_new_ones_keep_theirs(tmp_path: Path) -> None:
    path = tmp_path / "freight.db"
    db = sqlite3.connect(path)
    db.executescript(PREVIOUS_SCHEMA)
    db.execute(
        "INSERT INTO uploads (id, length, metadata, received, state, hashed_offset, created,"
        " concat_parts) VALUES ('old', 10, '{}', '[]', 'receiving', 0, 1.0, '[]')"
    )
    db.commit()
    db.close()
    table = SessionTable(path, durable=False, on_full=lambda: False)
    try:
        table.put(
            UploadSession(id="new", length=5, metadata={}, created=2.0, expires=None, owner="alice")
        )
        assert {s.id: s.owner for s in table.all()} == {"old": None, "new": "alice"}
        assert [s.id for s in table.page("uploads", None, 10, 0.0)] == ["old", "new"]
        assert [s.id for s in table.page("uploads", None, 10, 0.0, "alice")] == ["new"]
    finally:
        table.close()
