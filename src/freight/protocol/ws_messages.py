"""freight's WebSocket upload protocol, sans-IO: control messages, flow control, origins.

Text frames carry one JSON object each, ``{"op": ...}``; binary frames carry file bytes.
This module parses and builds the JSON messages of both directions (typed dataclasses in,
``str`` out, and back), keeps the server's flow-control books (:class:`ReceiveWindow`) and
holds the small pure rules around them (close codes, same-origin). It also reads and writes
RFC 6455 frame headers (:func:`parse_frame_header`, :func:`build_frame_header`), so that
binary frames can go between a socket and a file without a WebSocket library copying them.
Nothing here touches a socket, a file or aiohttp; ``docs/websocket.md`` is the protocol
written out in full.

This module is the protocol's public face; the code lives by concern in
:mod:`~freight.protocol.ws_message_types` (messages, errors, building),
:mod:`~freight.protocol.ws_parse` (parsing), :mod:`~freight.protocol.ws_rules` (flow control,
close codes, origins) and :mod:`~freight.protocol.ws_frame_header` (RFC 6455 frame headers).
"""

from __future__ import annotations

from freight.protocol.ws_frame_header import (
    MAX_FRAME_HEADER,
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameHeader,
    apply_mask,
    build_frame_header,
    parse_frame_header,
)
from freight.protocol.ws_message_types import (
    MAX_CONTROL_SIZE,
    MAX_INT64,
    ClientMessage,
    Credit,
    CreditExceeded,
    Done,
    ErrorReply,
    Finished,
    FrameTooLarge,
    InvalidMessage,
    Message,
    Ready,
    Resume,
    ServerMessage,
    Start,
    UnexpectedMessage,
    build_message,
    error_reply,
)
from freight.protocol.ws_parse import parse_client_message, parse_server_message
from freight.protocol.ws_rules import (
    CLOSE_FRAME_TOO_LARGE,
    CLOSE_INTERNAL_ERROR,
    CLOSE_NORMAL,
    ReceiveWindow,
    close_code_for,
    is_same_origin,
)

__all__ = [
    "CLOSE_FRAME_TOO_LARGE",
    "CLOSE_INTERNAL_ERROR",
    "CLOSE_NORMAL",
    "MAX_CONTROL_SIZE",
    "MAX_FRAME_HEADER",
    "MAX_INT64",
    "OP_BINARY",
    "OP_CLOSE",
    "OP_CONTINUATION",
    "OP_PING",
    "OP_PONG",
    "OP_TEXT",
    "ClientMessage",
    "Credit",
    "CreditExceeded",
    "Done",
    "ErrorReply",
    "Finished",
    "FrameHeader",
    "FrameTooLarge",
    "InvalidMessage",
    "Message",
    "Ready",
    "ReceiveWindow",
    "Resume",
    "ServerMessage",
    "Start",
    "UnexpectedMessage",
    "apply_mask",
    "build_frame_header",
    "build_message",
    "close_code_for",
    "error_reply",
    "is_same_origin",
    "parse_client_message",
    "parse_frame_header",
    "parse_server_message",
]
