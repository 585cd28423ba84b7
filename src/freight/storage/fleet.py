"""A fleet's backend: bytes in an S3 bucket, sessions, claims and events in PostgreSQL.

Every node started with the same ``--store s3://BUCKET/PREFIX --db DSN`` opens the same
backend, so any node serves any upload (docs/scaling.md). Each node stages bytes in its
own spool directory before they go to the bucket; the spool is emptied when the node
starts (what it held was either shipped and recorded, or never acknowledged).
"""

from __future__ import annotations

import contextlib
import os
import socket

from freight.config import ServerConfig, fleet_limits, parse_store
from freight.core.ports import Backend
from freight.storage.pg_claims import open_pg_claims
from freight.storage.pg_events import open_pg_events
from freight.storage.pg_leader import open_pg_leader
from freight.storage.pg_parts import open_pg_part_table
from freight.storage.pg_sessions import open_pg_sessions
from freight.storage.s3_blobs import S3Blobs

__all__ = ["node_name", "open_fleet"]


def node_name() -> str:
    """This node, as other nodes see it in claims and logs."""
    return f"{socket.gethostname()}:{os.getpid()}"


async def open_fleet(config: ServerConfig) -> Backend:
    """Connect this node to the fleet's database and bucket (raises what stops it)."""
    spec = parse_store(config.store)
    assert spec.kind == "s3" and config.db is not None
    dsn, node = config.db, node_name()
    staging = config.spool_dir or config.data_dir / "spool"
    async with contextlib.AsyncExitStack() as opened:
        sessions = await open_pg_sessions(dsn)
        opened.push_async_callback(sessions.close)
        max_size, part_size = fleet_limits(config.max_size, config.part_size)
        blobs = await S3Blobs.open(
            endpoint=config.s3_endpoint or f"https://s3.{config.s3_region}.amazonaws.com",
            access_key=os.environ.get("AWS_ACCESS_KEY_ID", ""),
            secret_key=os.environ.get("AWS_SECRET_ACCESS_KEY", ""),
            bucket=spec.bucket,
            prefix=spec.prefix,
            region=config.s3_region,
            spool_dir=staging / "freight-spool",
            botocore_data=staging / "botocore-data",
            open_table=lambda: open_pg_part_table(dsn),
            max_size=max_size,
            part_size=part_size,
        )
        opened.push_async_callback(blobs.close)
        claims = await open_pg_claims(dsn, node)
        opened.push_async_callback(claims.close)
        events = await open_pg_events(dsn, node)
        opened.push_async_callback(events.close)
        leader = await open_pg_leader(dsn, "background-work")
        opened.pop_all()  # from here on the backend closes them
    return Backend(sessions, blobs, claims=claims, events=events, leadership=leader)
