"""Who may open a WebSocket upload at ``/api/ws``: what is decided before the upgrade.

- A wrong ``Authorization`` header: 401. A server without a token refuses a browser from
  another origin: 403.
- A request that is not a WebSocket upgrade: 401 when the server has a token and the
  request brought no valid header (as everywhere else in the API), otherwise 400.
- An upgrade without the header (browsers cannot set one) proves the token in its first
  message. Until its opening message arrives a connection is *pending*: at most
  ``WsSettings.max_pending`` of them at once (503 ``ERR_SERVER_BUSY`` beyond that), each
  for at most ``WsSettings.auth_timeout`` seconds, and none holds an upload's buffers.
  Connections whose header proved the token are never pending, so clients without the
  token cannot lock out those that have it.
"""

from __future__ import annotations

import hmac

from aiohttp import web

from freight.errors import BadRequest, FreightError, ServerBusy, Unauthorized, UploadForbidden
from freight.server.origins import origin_permitted

__all__ = ["PENDING", "PendingConnections", "PendingTicket", "check_handshake", "not_an_upgrade"]

_NEEDS_HEADER = "a valid 'Authorization: Bearer <token>' header is required"


def check_handshake(request: web.Request, token: str | None) -> bool:
    """Refuse before the upgrade what can be refused; True if a header proved the token."""
    header = request.headers.get("Authorization")
    if token is not None and header is not None:
        given = header.encode("utf-8", "surrogateescape")  # aiohttp keeps odd bytes that way
        if not hmac.compare_digest(given, f"Bearer {token}".encode()):
            raise Unauthorized(_NEEDS_HEADER)
        return True
    if not origin_permitted(request):
        raise UploadForbidden("WebSocket uploads from another origin need the server's token")
    return False


def not_an_upgrade(token: str | None, header_proved: bool) -> FreightError:
    """The error for a request to the WebSocket endpoint that is no WebSocket handshake."""
    if token is not None and not header_proved:
        return Unauthorized(_NEEDS_HEADER)
    return BadRequest("this endpoint takes only a WebSocket upgrade (RFC 6455)")


class PendingConnections:
    """Counts the connections whose opening message has not arrived yet."""

    def __init__(self) -> None:
        self.count = 0

    def admit(self, limit: int) -> PendingTicket:
        if self.count >= limit:
            raise ServerBusy("too many WebSocket connections are waiting for their first message")
        self.count += 1
        return PendingTicket(self)


class PendingTicket:
    """One pending connection; ``release`` (idempotent) once its opening arrived or it ended."""

    def __init__(self, pending: PendingConnections) -> None:
        self._pending: PendingConnections | None = pending

    def release(self) -> None:
        if self._pending is not None:
            self._pending.count -= 1
            self._pending = None


PENDING = web.AppKey("ws_pending", PendingConnections)
