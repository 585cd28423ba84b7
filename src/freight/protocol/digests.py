"""RFC 9530 integrity fields: ``Repr-Digest``, ``Content-Digest`` and their ``Want-`` forms.

``Repr-Digest`` / ``Content-Digest`` are structured-field dictionaries (RFC 8941) mapping an
algorithm (``sha-256``, ``sha-512``, ...) to a byte sequence ``:<base64>:``. ``Want-*-Digest``
maps algorithms to a preference from 0 (not acceptable) to 10. Unknown algorithms are kept so
the caller decides what to trust; any syntax error, or a member of the wrong type, is an
:class:`InvalidHeader`, since RFC 8941 says a field that fails to parse is ignored as a whole.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from typing import Any

from http_sfv.dictionary import Dictionary
from http_sfv.item import Item

from freight.errors import InvalidHeader

__all__ = [
    "MAX_DIGEST_HEADER_LENGTH",
    "build_digest_header",
    "build_repr_digest",
    "parse_digest_header",
    "parse_want_digest",
    "sha256_from_digest_header",
]

MAX_DIGEST_HEADER_LENGTH = 8192
_SHA256_SIZE = 32
_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")
# RFC 8941 dictionary key.
_SF_KEY = re.compile(r"[a-z*][a-z0-9_.*-]*")


def build_digest_header(digests: Mapping[str, bytes]) -> str:
    """A ``Repr-Digest`` / ``Content-Digest`` value, e.g. ``sha-256=:...:, sha-512=:...:``.

    Raises ``ValueError`` for an algorithm name that is not a structured-field key (a
    programming error: the names come from freight, not from clients).
    """
    members: list[str] = []
    for algorithm, digest in digests.items():
        if not _SF_KEY.fullmatch(algorithm):
            raise ValueError(f"{algorithm!r} is not a valid digest algorithm key")
        members.append(f"{algorithm}=:{base64.b64encode(digest).decode('ascii')}:")
    return ", ".join(members)


def build_repr_digest(sha256_hex: str) -> str:
    """``Repr-Digest`` for a SHA-256 given in hex: ``sha-256=:<base64>:``.

    Raises ``ValueError`` unless ``sha256_hex`` is 64 hex digits (freight computed it).
    """
    if not _SHA256_HEX.fullmatch(sha256_hex):
        raise ValueError("a SHA-256 hex digest has 64 hex digits")
    return build_digest_header({"sha-256": bytes.fromhex(sha256_hex)})


def _parse_dictionary(value: str, header: str, max_length: int) -> dict[str, Any]:
    """Bare values of a structured-field dictionary; inner lists are rejected."""
    if len(value) > max_length:
        raise InvalidHeader(f"{header} is longer than {max_length} characters")
    try:
        raw = value.strip(" \t").encode("ascii")
    except UnicodeEncodeError as exc:
        raise InvalidHeader(f"{header} must be ASCII") from exc
    if not raw:
        return {}
    parsed = Dictionary()
    try:
        parsed.parse(raw)
    except ValueError as exc:
        raise InvalidHeader(f"{header} is not a valid structured-field dictionary") from exc
    values: dict[str, Any] = {}
    for key, member in parsed.items():
        if not isinstance(member, Item):
            raise InvalidHeader(f"{header} member {key!r} must not be a list")
        values[key] = member.value
    return values


def parse_digest_header(
    value: str, *, header: str = "Repr-Digest", max_length: int = MAX_DIGEST_HEADER_LENGTH
) -> dict[str, bytes]:
    """Algorithm to digest bytes from a ``Repr-Digest`` or ``Content-Digest`` value.

    ``header`` only names the field in error messages.
    """
    digests: dict[str, bytes] = {}
    for algorithm, digest in _parse_dictionary(value, header, max_length).items():
        if not isinstance(digest, bytes):
            raise InvalidHeader(f"{header} {algorithm} must be a byte sequence (:base64:)")
        digests[algorithm] = digest
    return digests


def parse_want_digest(
    value: str, *, header: str = "Want-Repr-Digest", max_length: int = MAX_DIGEST_HEADER_LENGTH
) -> dict[str, int]:
    """Algorithm to preference (0-10) from ``Want-Repr-Digest`` / ``Want-Content-Digest``."""
    wants: dict[str, int] = {}
    for algorithm, weight in _parse_dictionary(value, header, max_length).items():
        # bool is an int subclass, and a bare key parses as True: refuse it explicitly.
        if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= 10:
            raise InvalidHeader(f"{header} {algorithm} must be an integer from 0 to 10")
        wants[algorithm] = weight
    return wants


def sha256_from_digest_header(value: str, *, header: str = "Repr-Digest") -> bytes | None:
    """The ``sha-256`` digest of a digest field, ``None`` if it has none."""
    digest = parse_digest_header(value, header=header).get("sha-256")
    if digest is not None and len(digest) != _SHA256_SIZE:
        raise InvalidHeader(f"{header} sha-256 must be {_SHA256_SIZE} bytes, not {len(digest)}")
    return digest
