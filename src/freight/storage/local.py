"""Local filesystem storage with SQLite metadata: the embedded default.

:func:`open_local` wires the two halves into a :class:`~freight.core.ports.Backend`:
:class:`~freight.storage.local_sessions.SqliteSessions` (records) and
:class:`~freight.storage.local_blobs.LocalBlobs` (bytes). Layout under the data directory::

    freight.db            SQLite (WAL): one row per upload session, finished or not
                          (:mod:`.local_db`)
    space-reserve         a few MiB of real blocks kept for freight.db when the disk fills
    uploads/<id>.part     an unfinished upload; bytes are written in place at their final
                          offsets and take space only as they arrive (no preallocation)
    files/<id>            a finished upload, renamed from its part file (never copied)

Only ids made by :func:`freight.core.session.new_upload_id` become file names, and every path
is checked to stay inside the data directory; client-supplied names live only in metadata.

Considerations: the row is committed with ``synchronous=FULL`` when data is synced, so the
offset a session records never runs ahead of the bytes on disk. A crash between the rename
and the row update is repaired on open (a part that has become a file is finished again);
blobs without a row are dropped on open. When the disk fills, the reserve is given to SQLite
so the bytes written so far can still be recorded, and no upload data is written until the
reserve is back (see :mod:`.local_files`).

"""

from __future__ import annotations

import logging
from pathlib import Path

from freight.core.ports import Backend
from freight.storage.local_blobs import LocalBlobs
from freight.storage.local_sessions import SqliteSessions

__all__ = ["METADATA_RESERVE", "open_local"]

log = logging.getLogger(__name__)

# Room kept for the metadata store: thousands of row updates (WAL frames of a few pages).
METADATA_RESERVE = 8 * 1024 * 1024


def open_local(
    data_dir: Path, *, durable: bool = True, metadata_reserve: int = METADATA_RESERVE
) -> Backend:
    """The local backend in ``data_dir``: records in ``freight.db``, bytes as files.

    The space reserve is shared: when SQLite finds the disk full it spends the blob store's
    reserve, and deleting a blob takes it back. Blobs without a record (a crash came between
    a blob and its record changing) are dropped here, before anything else runs.
    """
    blobs = LocalBlobs(data_dir, metadata_reserve)
    sessions = SqliteSessions(
        blobs.root / "freight.db", durable=durable, on_full=blobs.give_reserve_to_metadata
    )
    try:
        dropped = blobs.drop_orphans(sessions.ids())
    except BaseException:
        sessions.table.close()
        raise
    if dropped:
        log.info("dropped %d stored blobs that had no session record", dropped)
    return Backend(sessions=sessions, blobs=blobs)
