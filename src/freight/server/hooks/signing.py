"""Webhook signatures: HMAC-SHA256 over the timestamp and the body.

The signed message is ``<timestamp>.<body>`` (the ``Freight-Hook-Timestamp`` header's
decimal seconds, a dot, the raw body bytes); ``Freight-Hook-Signature`` is ``v1=`` and its
hex digest. A receiver recomputes it with the shared ``--hook-secret``, compares in constant
time, and refuses a timestamp too far from its own clock (a replayed request).
"""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["SIGNATURE_HEADER", "TIMESTAMP_HEADER", "sign", "verify"]

SIGNATURE_HEADER = "Freight-Hook-Signature"
TIMESTAMP_HEADER = "Freight-Hook-Timestamp"


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``Freight-Hook-Signature`` value for ``body`` sent at ``timestamp``."""
    message = str(timestamp).encode() + b"." + body
    return "v1=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def verify(
    secret: str, timestamp: str, signature: str, body: bytes, *, now: float, tolerance: float
) -> bool:
    """Whether ``signature`` is ``secret``'s for ``body`` at ``timestamp``, and that is
    within ``tolerance`` seconds of ``now``."""
    try:
        sent = int(timestamp)
    except ValueError:
        return False
    if abs(now - sent) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, sent, body), signature)
