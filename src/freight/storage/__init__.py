"""Storage backends: implementations of the engine's ports (:mod:`freight.core.ports`,
:mod:`freight.core.blobs`).

* :func:`open_local`: SQLite records and local files, the embedded default;
* :class:`SqliteSessions` and :class:`LocalBlobs`: its two halves;
* :class:`MemoryBlobs`: bytes in memory, with no optional ability (the fallback paths).
"""

from freight.storage.local import open_local
from freight.storage.local_blobs import LocalBlobs
from freight.storage.local_sessions import SqliteSessions
from freight.storage.memory import MemoryBlobs

__all__ = ["LocalBlobs", "MemoryBlobs", "SqliteSessions", "open_local"]
