"""Who may open a WebSocket upload at ``/api/ws``: what is decided before the upgrade.

- A wrong ``Authorization`` header: 401 (a user's token counts as well as the server's:
  :mod:`.principals`). An upgrade without the header from a browser of another origin: 403.
- A request that is not a WebSocket upgrade: 401 when the server wants a token and the
  request brought no valid header (as everywhere else in the API), otherwise 400.
- An upgrade without the header (browsers cannot set one) proves the token in its first
  message. Until its opening message arrives a connection is *pending*: at most
  ``WsSettings.max_pending`` of them at once (503 ``ERR_SERVER_BUSY`` beyond that), each
  for at most ``WsSettings.auth_timeout`` seconds, and none holds an upload's buffers.
  Connections whose header proved the token are never pending, so clients without the
  token cannot lock out those that have it.
"""

from __future__ import annotations

from aiohttp import web

from freight.core.users import Principal
from freight.errors import BadRequest, FreightError, ServerBusy, Unauthorized, UploadForbidden
from freight.server.origins import origin_permitted
from freight.server.principals import Gate

__all__ = ["PENDING", "PendingConnections", "PendingTicket", "check_handshake", "not_an_upgrade"]

_NEEDS_HEADER = "a valid 'Authorization: Bearer <token>' header is required"


async def check_handshake(request: web.Request, gate: Gate) -> Principal | None:
    """Refuse before the upgrade what can be refused; the principal a header proved, or
    None when the first message is to prove it."""
    header = request.headers.get("Authorization")
    # On an open server a header proves nothing: the origin policy decides, as without one.
    if header is not None and await gate.wants_token():
        given = header.encode("utf-8", "surrogateescape")  # aiohttp keeps odd bytes that way
        if not given.startswith(b"Bearer "):
            raise Unauthorized(_NEEDS_HEADER)
        return await gate.identify(given[len(b"Bearer ") :])
    if not origin_permitted(request):
        raise UploadForbidden("WebSocket uploads from another origin need the server's token")
    return None


async def not_an_upgrade(gate: Gate, header_proved: bool) -> FreightError:
    """The error for a request to the WebSocket endpoint that is no WebSocket handshake."""
    if not header_proved and await gate.wants_token():
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
