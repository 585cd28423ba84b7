"""Storage backends behind one small interface (:mod:`freight.storage.base`)."""

from freight.storage.base import PartFile, SendfileSource, UploadStore
from freight.storage.local import LocalStore

__all__ = ["LocalStore", "PartFile", "SendfileSource", "UploadStore"]
