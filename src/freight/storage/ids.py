"""Which upload ids a backend accepts: what :func:`freight.core.session.new_upload_id` makes.

Anything else (``../x``, ``a/b``, an empty or overlong id, a trailing newline) is not found,
before it comes near a file name, a key or a query.
"""

from __future__ import annotations

import re

__all__ = ["is_upload_id"]

_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,128}")


def is_upload_id(upload_id: str) -> bool:
    return _ID_PATTERN.fullmatch(upload_id) is not None
