"""Sans-IO codec of freight's raw TCP protocol, version 1 (specified in ``docs/protocol.md``).

Every frame is an 8-byte header (type, flags, reserved, body length; big-endian) and a body.
Control frames are small and parsed into frozen dataclasses; DATA frames carry an 8-byte
offset and a payload that is never copied: :class:`FrameDecoder` hands it back as
:class:`DataChunk` views of the buffer it was fed, so a transport can move payload bytes
from its own reused receive buffer straight to their destination.

Limits come first: a header's length field is checked against its frame type's bounds the
moment the 8 header bytes are in, before a single body byte is kept. The decoder's own
storage is one buffer of :data:`MAX_BUFFERED` bytes (a header plus the largest control body),
allocated once; whatever a peer sends, it never holds more.

Frames validate their fields when constructed, so the decoder and the encoders share one
set of rules and an invalid frame can be neither sent nor received.

This module is the codec's public face; the code lives by concern in
:mod:`~freight.protocol.frame_rules` (limits, frame types, errors, field checks),
:mod:`~freight.protocol.frame_types` (the frames and DATA encoding) and
:mod:`~freight.protocol.frame_decoder` (the incremental decoder).
"""

from __future__ import annotations

from freight.protocol.frame_decoder import FrameDecoder
from freight.protocol.frame_rules import (
    CLIENT_FRAMES,
    DIGEST_SIZE,
    FLAG_SHA256,
    HEADER_SIZE,
    MAGIC,
    MAX_BUFFERED,
    MAX_DATA_PAYLOAD,
    MAX_ID,
    MAX_MESSAGE,
    MAX_NAME,
    MAX_OFFSET,
    MAX_TOKEN,
    SERVER_FRAMES,
    UNTIL_END,
    VERSION,
    FrameError,
    FrameTooLarge,
    FrameType,
    IdleTimeout,
    MalformedFrame,
    TruncatedStream,
    UnexpectedFrame,
    UnknownFrameType,
)
from freight.protocol.frame_types import (
    Accepted,
    Ack,
    ControlFrame,
    DataChunk,
    Done,
    ErrorFrame,
    FileInfo,
    Finished,
    Frame,
    Get,
    Hello,
    Put,
    Resume,
    Welcome,
    encode_data,
    encode_data_header,
)

__all__ = [
    "CLIENT_FRAMES",
    "DIGEST_SIZE",
    "FLAG_SHA256",
    "HEADER_SIZE",
    "MAGIC",
    "MAX_BUFFERED",
    "MAX_DATA_PAYLOAD",
    "MAX_ID",
    "MAX_MESSAGE",
    "MAX_NAME",
    "MAX_OFFSET",
    "MAX_TOKEN",
    "SERVER_FRAMES",
    "UNTIL_END",
    "VERSION",
    "Accepted",
    "Ack",
    "ControlFrame",
    "DataChunk",
    "Done",
    "ErrorFrame",
    "FileInfo",
    "Finished",
    "Frame",
    "FrameDecoder",
    "FrameError",
    "FrameTooLarge",
    "FrameType",
    "Get",
    "Hello",
    "IdleTimeout",
    "MalformedFrame",
    "Put",
    "Resume",
    "TruncatedStream",
    "UnexpectedFrame",
    "UnknownFrameType",
    "Welcome",
    "encode_data",
    "encode_data_header",
]
