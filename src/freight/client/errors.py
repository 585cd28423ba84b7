"""Errors the client library raises.

They all derive from :class:`freight.errors.FreightError`, so a caller catches one type.
Errors the *server* reports keep its stable code in ``server_code`` and its HTTP status in
``http_status``; the client's own ``code`` stays fixed per class.
"""

from __future__ import annotations

from typing import Any

from freight.errors import FreightError

__all__ = [
    "ClientError",
    "ConnectionFailed",
    "DigestMismatch",
    "LocalFileChanged",
    "ProtocolViolation",
    "ServerError",
]


class ClientError(FreightError):
    """Root of the errors raised by :mod:`freight.client`."""

    code = "ERR_CLIENT"


class ServerError(ClientError):
    """The server answered with an error status; ``message`` is the server's own text."""

    code = "ERR_SERVER"

    def __init__(
        self, message: str, *, http_status: int, server_code: str | None = None, **details: Any
    ) -> None:
        super().__init__(message, http_status=http_status, server_code=server_code, **details)
        self.http_status = http_status
        self.server_code = server_code


class ConnectionFailed(ClientError):
    """The server could not be reached, or the connection kept failing past the retry budget."""

    code = "ERR_CONNECTION"


class ProtocolViolation(ClientError):
    """The server answered something this client cannot make sense of (a missing header...)."""

    code = "ERR_PROTOCOL"


class DigestMismatch(ClientError):
    """The SHA-256 computed locally differs from the one the server advertises."""

    code = "ERR_DIGEST_MISMATCH"

    def __init__(self, message: str, *, local: str, remote: str) -> None:
        super().__init__(message, local=local, remote=remote)
        self.local = local
        self.remote = remote


class LocalFileChanged(ClientError):
    """The file being sent changed size while it was read."""

    code = "ERR_LOCAL_FILE_CHANGED"
