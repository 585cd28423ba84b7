"""Per-request checksums of the tus checksum extension (``Upload-Checksum``).

A tus client may send ``Upload-Checksum: <algorithm> <base64 digest>`` with a PATCH; the server
hashes the body as it streams in and compares once the request ends (460 on mismatch, the chunk
is discarded). This module only names the algorithms and builds hashers; parsing the header
lives in :mod:`freight.protocol.tus`.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Protocol

from freight.errors import ChecksumMismatch, UnsupportedChecksumAlgorithm

__all__ = [
    "CHECKSUM_ALGORITHMS",
    "Hasher",
    "digest_size",
    "new_checksum",
    "verify_checksum",
]

# Order is what OPTIONS advertises; sha1 first because tus makes it mandatory.
CHECKSUM_ALGORITHMS: tuple[str, ...] = ("sha1", "sha256", "md5", "sha512")

_DIGEST_SIZES: dict[str, int] = {"sha1": 20, "sha256": 32, "md5": 16, "sha512": 64}


class Hasher(Protocol):
    """The part of a :mod:`hashlib` hash object that freight uses."""

    @property
    def name(self) -> str: ...

    @property
    def digest_size(self) -> int: ...

    def update(self, data: bytes | bytearray | memoryview, /) -> None: ...

    def digest(self) -> bytes: ...

    def hexdigest(self) -> str: ...


def _require_supported(algo: str) -> None:
    if algo not in _DIGEST_SIZES:
        supported = ", ".join(CHECKSUM_ALGORITHMS)
        raise UnsupportedChecksumAlgorithm(
            f"Upload-Checksum algorithm {algo[:32]!r} is not supported; use one of {supported}"
        )


def new_checksum(algo: str) -> Hasher:
    """A fresh hasher for a tus checksum algorithm name (``sha1``, ``sha256``, ...)."""
    _require_supported(algo)
    # These digests guard against corruption, not attackers; saying so keeps md5 and sha1
    # available on FIPS-restricted OpenSSL builds.
    return hashlib.new(algo, usedforsecurity=False)


def digest_size(algo: str) -> int:
    """How many bytes a digest of ``algo`` has."""
    _require_supported(algo)
    return _DIGEST_SIZES[algo]


def verify_checksum(hasher: Hasher, expected: bytes) -> None:
    """Raise :class:`ChecksumMismatch` unless ``hasher`` has produced ``expected``."""
    if not hmac.compare_digest(hasher.digest(), expected):
        raise ChecksumMismatch(f"Upload-Checksum {hasher.name} does not match the request body")
