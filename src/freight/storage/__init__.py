"""Storage backends: implementations of the engine's ports (:mod:`freight.core.ports`,
:mod:`freight.core.blobs`).

* :func:`open_local`: SQLite records and local files, the embedded default;
* :class:`SqliteSessions` and :class:`LocalBlobs`: its two halves;
* :class:`MemoryBlobs`: bytes in memory, with no optional ability (the fallback paths).

Each is imported when first asked for: a fleet node, which uses none of them, then never
loads SQLite or the local store.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from freight.storage.local import open_local
    from freight.storage.local_blobs import LocalBlobs
    from freight.storage.local_sessions import SqliteSessions
    from freight.storage.memory import MemoryBlobs

__all__ = ["LocalBlobs", "MemoryBlobs", "SqliteSessions", "open_local"]

_HOMES = {
    "LocalBlobs": "freight.storage.local_blobs",
    "MemoryBlobs": "freight.storage.memory",
    "SqliteSessions": "freight.storage.local_sessions",
    "open_local": "freight.storage.local",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
