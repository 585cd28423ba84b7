"""freight's tables in PostgreSQL, created and migrated when a node opens the database.

Every node runs :func:`ensure_schema` at start; a transaction-scoped advisory lock makes
concurrent starts take turns, and ``freight_schema`` records which migrations ran, one row
per component, so a later version adds a migration to the list and nothing else. A database
migrated by a newer freight than this one is refused rather than misread.

Columns mirror the local backend's SQLite table. Typed as PostgreSQL sees them:

* times stay ``double precision`` seconds since the epoch: a ``timestamptz`` keeps only
  microseconds, so ``created`` would not come back equal and ``(created, id)`` page keys
  would skip or repeat sessions;
* ``metadata`` is ``json``, not ``jsonb``: a client's value may hold U+0000, which ``jsonb``
  refuses, and ``json`` keeps the client's key order; freight never queries inside it;
* ``received`` is a flat ``int8[]`` of ``start, end`` pairs, merged in place by
  :data:`ADD_RANGE` so recording a range is one statement on one row.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from freight.errors import FreightError
from freight.storage.pg_outbox import OUTBOX_MIGRATION

if TYPE_CHECKING:
    import asyncpg
    from asyncpg.pool import PoolConnectionProxy

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "ensure_schema"]

COMPONENT = "sessions"
# Any constant works; it only has to be the same on every node.
_MIGRATION_LOCK = 0x66726569676874

_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS freight_schema (
    component text PRIMARY KEY,
    version integer NOT NULL
)
"""

# ``r`` merged with [s, e): the sorted, disjoint, non-adjacent pairs RangeSet keeps. Gaps
# and islands: a pair starts a new island unless an earlier pair reaches it.
ADD_RANGE_FUNCTION = """
CREATE OR REPLACE FUNCTION freight_add_range(r int8[], s int8, e int8) RETURNS int8[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    WITH pairs AS (
        SELECT r[2 * i - 1] AS s, r[2 * i] AS e
        FROM generate_series(1, coalesce(cardinality(r), 0) / 2) AS i
        UNION ALL
        SELECT s, e WHERE s < e
    ), marked AS (
        SELECT s, e, CASE WHEN s <= max(e) OVER (
            ORDER BY s, e ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING
        ) THEN 0 ELSE 1 END AS opens
        FROM pairs
    ), grouped AS (
        SELECT s, e, sum(opens) OVER (ORDER BY s, e ROWS UNBOUNDED PRECEDING) AS island
        FROM marked
    ), islands AS (
        SELECT min(s) AS s, max(e) AS e FROM grouped GROUP BY island
    )
    SELECT coalesce(array_agg(v ORDER BY islands.s, k), '{}'::int8[])
    FROM islands CROSS JOIN LATERAL (VALUES (1, islands.s), (2, islands.e)) AS t(k, v)
$$
"""

RANGES_TOTAL_FUNCTION = """
CREATE OR REPLACE FUNCTION freight_ranges_total(r int8[]) RETURNS int8
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(sum(r[2 * i] - r[2 * i - 1]), 0)::int8
    FROM generate_series(1, coalesce(cardinality(r), 0) / 2) AS i
$$
"""

_V1 = (
    """
    CREATE TABLE freight_uploads (
        id text PRIMARY KEY,
        length bigint,
        metadata json NOT NULL,
        received int8[] NOT NULL DEFAULT '{}',
        state text NOT NULL,
        hashed_offset bigint NOT NULL,
        hash_state bytea,
        created double precision NOT NULL,
        expires double precision,
        concat_kind text,
        concat_parts text[] NOT NULL DEFAULT '{}',
        sha256 text,
        finished double precision,
        client text,
        received_bytes bigint NOT NULL DEFAULT 0,
        used_by text,
        chunk_size bigint,
        declared_sha256 text
    )
    """,
    ADD_RANGE_FUNCTION,
    RANGES_TOTAL_FUNCTION,
    # listings: WHERE state = ... ORDER BY created, id
    "CREATE INDEX freight_uploads_listing ON freight_uploads (state, created, id)",
    # unfinished totals (all, and per client)
    "CREATE INDEX freight_uploads_state ON freight_uploads (state, expires)",
    "CREATE INDEX freight_uploads_client ON freight_uploads (client, state)",
    # the expiry sweep
    "CREATE INDEX freight_uploads_expires ON freight_uploads (expires) WHERE expires IS NOT NULL",
    # the work sweep: its predicate is exactly work_ids' WHERE
    "CREATE INDEX freight_uploads_work ON freight_uploads (created) WHERE"
    " (state = 'receiving' AND length IS NOT NULL AND received_bytes >= length)"
    " OR state = 'assembling'",
)

# Each upload's owner: the user who created it (none for older uploads: admins see them).
_V2 = (
    "ALTER TABLE freight_uploads ADD COLUMN owner text",
    "CREATE INDEX freight_uploads_owner ON freight_uploads (owner, state, created, id)",
)

# find_finished: is there a finished file of this size (and SHA-256)?
_V4_DIGEST_INDEX = (
    "CREATE INDEX freight_uploads_digest ON freight_uploads (length, sha256)"
    " WHERE state = 'finished'",
)

# Migration n (1-based) takes the schema from version n - 1 to n.
# Version 3: the hook outbox (:mod:`freight.storage.pg_outbox`).
MIGRATIONS: tuple[tuple[str, ...], ...] = (_V1, _V2, OUTBOX_MIGRATION, _V4_DIGEST_INDEX)
SCHEMA_VERSION = len(MIGRATIONS)


async def ensure_schema(
    connection: asyncpg.Connection | PoolConnectionProxy,
    component: str = COMPONENT,
    migrations: tuple[tuple[str, ...], ...] = MIGRATIONS,
) -> None:
    """Create or migrate ``component``'s tables; safe to run from many nodes at once."""
    latest = len(migrations)
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
        await connection.execute(_VERSION_TABLE)
        version = await connection.fetchval(
            "SELECT version FROM freight_schema WHERE component = $1", component
        )
        version = int(version or 0)
        if version > latest:
            raise FreightError(
                f"the database's {component} schema has version {version}; this freight"
                f" knows versions up to {latest}: upgrade freight"
            )
        for statements in migrations[version:]:
            for statement in statements:
                await connection.execute(statement)
        if version < latest:
            await connection.execute(
                "INSERT INTO freight_schema (component, version) VALUES ($1, $2)"
                " ON CONFLICT (component) DO UPDATE SET version = excluded.version",
                component,
                latest,
            )
