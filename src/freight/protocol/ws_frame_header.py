"""freight's WebSocket upload protocol: RFC 6455 frame headers and masking, sans-IO.

Reading and writing frame headers here lets a transport move binary frames between a socket
and a file without a WebSocket library copying them.
"""

from __future__ import annotations

from dataclasses import dataclass

from freight._types import Buffer
from freight.protocol.ws_message_types import MAX_INT64

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA
MAX_FRAME_HEADER = 14  # two bytes, a 64-bit length and a masking key


@dataclass(frozen=True)
class FrameHeader:
    """The header of one frame: ``length`` payload bytes follow its ``size`` bytes."""

    fin: bool  # the last frame of its message
    rsv: int  # the three reserved bits; 0 unless an extension was negotiated
    opcode: int
    mask: bytes | None  # the 4-byte masking key of a client's frame
    length: int
    size: int


def parse_frame_header(data: Buffer) -> FrameHeader | int:
    """The header at the start of ``data``, or how many bytes it needs if ``data`` is short.

    Only the layout is decoded. Whether the frame is allowed (its opcode, reserved bits,
    length) is for the caller to decide, or for a full WebSocket parser it hands the frame to.
    """
    view = memoryview(data).cast("B")
    if view.nbytes < 2:
        return 2
    first, second = view[0], view[1]
    code = second & 0x7F
    extra = 2 if code == 126 else 8 if code == 127 else 0
    masked = bool(second & 0x80)
    size = 2 + extra + (4 if masked else 0)
    if view.nbytes < size:
        return size
    length = int.from_bytes(view[2 : 2 + extra], "big") if extra else code
    return FrameHeader(
        fin=bool(first & 0x80),
        rsv=(first >> 4) & 0x7,
        opcode=first & 0xF,
        mask=bytes(view[size - 4 : size]) if masked else None,
        length=length,
        size=size,
    )


def build_frame_header(
    opcode: int, length: int, mask: bytes | None = None, *, fin: bool = True
) -> bytes:
    """The header of a frame of ``length`` bytes; a client passes its 4-byte ``mask``."""
    if not 0 <= length <= MAX_INT64:
        raise ValueError(f"a frame holds 0 to {MAX_INT64} bytes")
    if mask is not None and len(mask) != 4:
        raise ValueError("a masking key has 4 bytes")
    first = (0x80 if fin else 0) | opcode
    masked = 0x80 if mask is not None else 0
    if length < 126:
        header = bytes((first, masked | length))
    elif length < 1 << 16:
        header = bytes((first, masked | 126)) + length.to_bytes(2, "big")
    else:
        header = bytes((first, masked | 127)) + length.to_bytes(8, "big")
    return header + (mask or b"")


def apply_mask(mask: bytes, data: bytearray) -> None:
    """XOR ``data`` in place with the 4-byte ``mask``, repeated: masks and unmasks alike.

    Pure Python (one big-integer XOR); a transport uses a C version when it has one.
    """
    if len(mask) != 4:
        raise ValueError("a masking key has 4 bytes")
    size = len(data)
    if size:
        key = (mask * (size // 4 + 1))[:size]
        xored = int.from_bytes(data, "little") ^ int.from_bytes(key, "little")
        data[:] = xored.to_bytes(size, "little")
