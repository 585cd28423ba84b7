"""freight's WebSocket upload protocol: flow control, close codes and the same-origin rule.

:class:`ReceiveWindow` keeps the server's credit books for one connection;
:func:`close_code_for` and :func:`is_same_origin` are the small pure rules a transport applies
around its socket.
"""

from __future__ import annotations

import re

from freight.errors import FreightError
from freight.protocol.ws_message_types import Credit, CreditExceeded, FrameTooLarge

CLOSE_NORMAL = 1000
CLOSE_FRAME_TOO_LARGE = 1009  # RFC 6455 "message too big"
CLOSE_INTERNAL_ERROR = 1011
_CLOSE_APPLICATION_BASE = 4000  # 4000-4999 are private: 4000 + the error's HTTP status


class ReceiveWindow:
    """The server's flow-control books for one connection.

    The client may send bytes up to ``limit``: the durable offset plus the credit, never
    past the upload's size, in frames of at most ``max_frame`` bytes. Once ``window`` bytes
    arrived since the last grant the server makes them durable and calls :meth:`grant`.
    A client that waits for room for a whole frame can always go on as long as
    ``credit >= window + max_frame``; the constructor insists on it.
    """

    def __init__(self, *, offset: int, size: int, credit: int, window: int, max_frame: int):
        if credit < window + max_frame:
            raise ValueError("credit must cover a window plus a frame, or a client could stall")
        self.position = offset
        self.size = size
        self.credit = credit
        self.window = window
        self.max_frame = max_frame
        self._granted_at = offset
        self.limit = min(offset + credit, size)

    @property
    def opening_credit(self) -> int:
        """The credit announced in ``ready``."""
        return self.limit - self._granted_at

    @property
    def window_full(self) -> bool:
        """True once a window's worth of bytes arrived since the last grant."""
        return self.position - self._granted_at >= self.window

    def accept(self, nbytes: int) -> None:
        """Account for a binary frame of ``nbytes``, or raise before any of it is written."""
        if nbytes > self.max_frame:
            raise FrameTooLarge(
                f"a binary frame of {nbytes} bytes exceeds max_frame ({self.max_frame})",
                max_frame=self.max_frame,
            )
        if self.position + nbytes > self.limit:
            raise CreditExceeded(
                f"data up to byte {self.position + nbytes} goes past the granted "
                f"limit {self.limit}",
                offset=self._granted_at,
                limit=self.limit,
            )
        self.position += nbytes

    def grant(self, durable: int) -> Credit:
        """Everything up to ``durable`` is safe: move the limit and say so."""
        self._granted_at = durable
        self.limit = min(durable + self.credit, self.size)
        return Credit(offset=durable, credit=self.limit - durable)


def close_code_for(error: FreightError) -> int:
    """The WebSocket close code that ends a connection after ``error``.

    1009 for an oversized frame (RFC 6455), 1011 for an internal error, otherwise
    4000 + the error's HTTP status (4400, 4401, 4404, 4409, 4413, 4423, 4460, 4507...).
    """
    if isinstance(error, FrameTooLarge):
        return CLOSE_FRAME_TOO_LARGE
    if error.status >= 500 and error.code == FreightError.code:
        return CLOSE_INTERNAL_ERROR
    return _CLOSE_APPLICATION_BASE + error.status


_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_ORIGIN = re.compile(
    r"(?P<scheme>[a-z][a-z0-9+.-]*)://(?P<host>\[[0-9a-f:.]+\]|[^:/\[\]]+)"
    r"(?::(?P<port>[0-9]{1,5}))?/?",
    re.I,
)


def is_same_origin(origin: str, *, scheme: str, host: str) -> bool:
    """Whether a browser's ``Origin`` header names the server it is talking to.

    ``scheme`` and ``host`` describe the request (``host`` as in the ``Host`` header, port
    included when not the default). Default ports compare equal to no port; ``null`` and
    anything unparsable are foreign.
    """
    theirs = _origin_tuple(origin)
    ours = _origin_tuple(f"{scheme}://{host}")
    return theirs is not None and theirs == ours


def _origin_tuple(text: str) -> tuple[str, str, int] | None:
    match = _ORIGIN.fullmatch(text.strip())
    if match is None:
        return None
    scheme = match["scheme"].lower()
    default = _DEFAULT_PORTS.get(scheme)
    port = int(match["port"]) if match["port"] else default
    if port is None:
        return None
    # ws and wss share their origins with http and https.
    scheme = {"ws": "http", "wss": "https"}.get(scheme, scheme)
    return scheme, match["host"].lower().rstrip("."), port
