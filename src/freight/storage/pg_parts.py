"""The part table of S3 blobs in PostgreSQL (:class:`~freight.storage.s3_table.PartTable`).

Three tables keyed by the freight upload id: ``freight_blob_uploads`` (the multipart
upload's id and the part size), ``freight_blob_parts`` (one row per part number: a re-sent
part replaces its row with ``ON CONFLICT DO UPDATE``) and ``freight_blob_pieces`` (byte
ranges stored as objects). Rows of parts and pieces reference their upload's row, so a
recorder racing a delete fails on the foreign key instead of leaving orphans, and dropping
the upload's row drops the rest (``ON DELETE CASCADE``). Recording is inserts only, so two
nodes recording at once never lose each other's rows and never wait on each other.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from freight.errors import UploadNotFound
from freight.storage.pg_pool import PoolSettings, create_pool, translate
from freight.storage.pg_schema import ensure_schema
from freight.storage.s3_table import BlobTable, PartRow, PieceRow

__all__ = ["COMPONENT", "PgPartTable", "open_pg_part_table"]

COMPONENT = "blob_parts"
_MIGRATIONS = (
    (
        """
        CREATE TABLE freight_blob_uploads (
            blob_id text PRIMARY KEY,
            multipart_id text NOT NULL,
            part_size bigint NOT NULL
        )
        """,
        """
        CREATE TABLE freight_blob_parts (
            blob_id text NOT NULL REFERENCES freight_blob_uploads ON DELETE CASCADE,
            number integer NOT NULL,
            size bigint NOT NULL,
            etag text NOT NULL,
            sha256 bytea NOT NULL,
            PRIMARY KEY (blob_id, number)
        )
        """,
        """
        CREATE TABLE freight_blob_pieces (
            blob_id text NOT NULL REFERENCES freight_blob_uploads ON DELETE CASCADE,
            start_at bigint NOT NULL,
            end_at bigint NOT NULL,
            sha256 bytea NOT NULL,
            PRIMARY KEY (blob_id, start_at, end_at)
        )
        """,
    ),
    # Version 2: a part's checksum is the CRC-32 the store verifies as it takes the part
    # (a SHA-256 cost the node and the store each more CPU than the upload); rows of
    # before keep their SHA-256, told apart by length (s3_table.PartRow).
    (
        "ALTER TABLE freight_blob_parts RENAME COLUMN sha256 TO checksum",
        "ALTER TABLE freight_blob_pieces RENAME COLUMN sha256 TO checksum",
    ),
)
_PART = (
    "INSERT INTO freight_blob_parts (blob_id, number, size, etag, checksum)"
    " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (blob_id, number) DO UPDATE"
    " SET size = excluded.size, etag = excluded.etag, checksum = excluded.checksum"
)
_PIECE = (
    "INSERT INTO freight_blob_pieces (blob_id, start_at, end_at, checksum)"
    " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING"
)


class PgPartTable:
    """Part tables of one node's S3 blobs, over its own bounded pool."""

    def __init__(self, pool: asyncpg.Pool, acquire_timeout: float) -> None:
        self._pool = pool
        self._acquire_timeout = acquire_timeout

    async def create(self, blob_id: str, upload: str, part_size: int) -> bool:
        with translate("creating a part table"):
            async with self._pool.acquire(timeout=self._acquire_timeout) as connection:
                status = await connection.execute(
                    "INSERT INTO freight_blob_uploads (blob_id, multipart_id, part_size)"
                    " VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                    blob_id,
                    upload,
                    part_size,
                )
        return bool(status == "INSERT 0 1")

    async def load(self, blob_id: str) -> BlobTable | None:
        with translate("reading a part table"):
            async with (
                self._pool.acquire(timeout=self._acquire_timeout) as connection,
                # One snapshot for the three reads: parts and pieces of the same moment.
                connection.transaction(isolation="repeatable_read", readonly=True),
            ):
                head = await connection.fetchrow(
                    "SELECT multipart_id, part_size FROM freight_blob_uploads WHERE blob_id = $1",
                    blob_id,
                )
                if head is None:
                    return None
                parts = await connection.fetch(
                    "SELECT number, size, etag, checksum FROM freight_blob_parts"
                    " WHERE blob_id = $1",
                    blob_id,
                )
                pieces = await connection.fetch(
                    "SELECT start_at, end_at, checksum FROM freight_blob_pieces"
                    " WHERE blob_id = $1 ORDER BY start_at, end_at",
                    blob_id,
                )
        return BlobTable(
            str(head["multipart_id"]),
            int(head["part_size"]),
            {int(r["number"]): PartRow(int(r["number"]), *_part(r)) for r in parts},
            [PieceRow(int(r["start_at"]), int(r["end_at"]), bytes(r["checksum"])) for r in pieces],
        )

    async def record(
        self, blob_id: str, parts: Sequence[PartRow] = (), pieces: Sequence[PieceRow] = ()
    ) -> None:
        if not parts and not pieces:
            return
        part_rows = [(blob_id, p.number, p.size, p.etag, p.checksum) for p in parts]
        piece_rows = [(blob_id, p.start, p.end, p.checksum) for p in pieces]
        with translate("recording parts"):
            try:
                async with self._pool.acquire(timeout=self._acquire_timeout) as connection:
                    if not pieces or not parts:
                        # One executemany is atomic by itself (asyncpg runs it in an
                        # implicit transaction): one round trip, not three. A part
                        # shipped mid-request is recorded this way, once a part.
                        statement, rows = (_PART, part_rows) if parts else (_PIECE, piece_rows)
                        await connection.executemany(statement, rows)
                        return
                    async with connection.transaction():
                        await connection.executemany(_PART, part_rows)
                        await connection.executemany(_PIECE, piece_rows)
            except asyncpg.ForeignKeyViolationError as exc:
                raise UploadNotFound("no such upload") from exc

    async def drop(self, blob_id: str) -> None:
        with translate("dropping a part table"):
            async with self._pool.acquire(timeout=self._acquire_timeout) as connection:
                await connection.execute(
                    "DELETE FROM freight_blob_uploads WHERE blob_id = $1", blob_id
                )

    async def close(self) -> None:
        with translate("closing the part tables"):
            await self._pool.close()


def _part(row: asyncpg.Record) -> tuple[int, str, bytes]:
    return int(row["size"]), str(row["etag"]), bytes(row["checksum"])


class _PartTableConnection(asyncpg.Connection):
    """A connection of the part table's own pool. Its sessions take no advisory lock,
    listen to nothing and set nothing, so handing one back to the pool skips asyncpg's
    reset query (a round trip per part recorded, and a query for the server to run); an
    open transaction is still rolled back (``Connection.reset`` does that anyway)."""

    def get_reset_query(self) -> str:
        return ""


async def open_pg_part_table(dsn: str, settings: PoolSettings | None = None) -> PgPartTable:
    """Connect to ``dsn``, create or migrate the part tables, and return them; closing the
    table closes its pool."""
    settings = settings or PoolSettings()
    pool = await create_pool(dsn, settings, connection_class=_PartTableConnection)
    try:
        with translate("preparing the part tables"):
            async with pool.acquire(timeout=settings.acquire_timeout) as connection:
                await ensure_schema(connection, COMPONENT, _MIGRATIONS)
    except BaseException:
        await pool.close()
        raise
    return PgPartTable(pool, acquire_timeout=settings.acquire_timeout)
