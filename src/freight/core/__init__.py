"""The upload engine: sessions, received ranges, incremental SHA-256, durability, expiry.

Every protocol adapter drives uploads through :class:`UploadEngine`; the engine knows no
protocol and stores through the ports it owns, :mod:`freight.core.ports`.
"""

from freight.core.engine import UploadEngine
from freight.core.rangeset import RangeSet
from freight.core.session import ConcatKind, UploadSession, UploadState
from freight.core.writer import UploadWriter

__all__ = ["ConcatKind", "RangeSet", "UploadEngine", "UploadSession", "UploadState", "UploadWriter"]
