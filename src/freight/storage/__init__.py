"""Storage backends: implementations of the engine's ports (:mod:`freight.core.ports`)."""

from freight.storage.local import LocalStore

__all__ = ["LocalStore"]
