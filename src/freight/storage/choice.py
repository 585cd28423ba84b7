"""Which backend a server runs on, from its ``--store`` setting.

``local`` (the default) keeps records in SQLite and bytes as files in the data directory.
``memory`` keeps bytes in memory and records in a SQLite file started afresh each time:
nothing survives a restart. It is for trying freight out and for tests that prove the
paths a store without sendfile, splice or cheap read-back takes. ``s3://BUCKET/PREFIX``
is a fleet's backend (:mod:`freight.storage.fleet`). Each backend's modules are imported
only when it is opened: a fleet node never loads SQLite or the local store, nor a local
server the S3 and PostgreSQL clients.
"""

from __future__ import annotations

from freight.config import FsyncPolicy, ServerConfig, parse_store
from freight.core.blobs import PartSized
from freight.core.buffers import BufferPool
from freight.core.ports import Backend

__all__ = ["PART_STORE_BUFFER", "open_backend", "open_embedded", "sync_window", "writer_buffers"]

_MEMORY_DB = "memory-store.db"
# A writer's buffers where the store keeps parts: see writer_buffers().
PART_STORE_BUFFER = 512 * 1024


def open_embedded(config: ServerConfig) -> Backend:
    """The backend of a ``local`` or ``memory`` store: no other service, opened at once."""
    kind = parse_store(config.store).kind
    data_dir = config.data_dir
    if kind == "local":
        from freight.storage.local import open_local

        return open_local(data_dir, durable=config.fsync is not FsyncPolicy.NEVER)
    if kind == "memory":
        from freight.storage.local_sessions import SqliteSessions
        from freight.storage.memory import MemoryBlobs

        data_dir.mkdir(parents=True, exist_ok=True)
        for stale in data_dir.glob(f"{_MEMORY_DB}*"):
            stale.unlink()  # the bytes its records described are gone
        return Backend(sessions=SqliteSessions(data_dir / _MEMORY_DB), blobs=MemoryBlobs())
    raise ValueError(f"the {kind} store needs open_backend()")


async def open_backend(config: ServerConfig) -> Backend:
    """The backend ``config.store`` names, with whatever services it needs connected."""
    if parse_store(config.store).kind == "s3":
        from freight.storage.fleet import open_fleet  # needs the "scale" extra

        return await open_fleet(config)
    return open_embedded(config)


def sync_window(config: ServerConfig, backend: Backend) -> int:
    """Bytes a writer takes between two records of its progress (``--sync-every``).

    Where the store keeps parts (a fleet's bucket), a client cut off from one node resumes
    through another from the last record, so everything received since would be sent
    again: such a store records at least once a part (what it ships anyway). Its writers
    record the whole parts shipped by then (:class:`~freight.core.blobs.SyncsThrough`),
    so a checkpoint costs one small database write, never an object of its own.
    """
    if isinstance(backend.blobs, PartSized):
        return min(config.sync_every, backend.blobs.part_size)
    return config.sync_every


def writer_buffers(backend: Backend) -> BufferPool:
    """The buffers the engine's writers stage received bytes in.

    Where the store keeps parts (a fleet's bucket), bytes go from the buffers to the
    spool's page cache and leave for the bucket a part at a time, at the object store's
    pace, not the disk's: a pair of 512 KiB buffers instead of 1 MiB keeps a node's peak
    1.3 MiB lower (62.5 MiB instead of 63.8 after a 256 MiB tus upload, measured) for 0.2
    CPU-s more per GiB in handing buffers to worker threads; 256 KiB saved 0.2 MiB more
    and cost 0.7 CPU-s/GiB more (3.6 instead of 2.9: a hand-off per buffer).
    """
    if isinstance(backend.blobs, PartSized):
        return BufferPool(size=PART_STORE_BUFFER)
    return BufferPool()
