"""aiohttp's side of a WebSocket upload connection (see :mod:`.ws`)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aiohttp import WSCloseCode, WSMessage, WSMsgType, web

from freight.errors import ClientDisconnected
from freight.protocol.ws_message_types import FrameTooLarge, build_message, error_reply

__all__ = ["UploadSocket", "application_message", "drop_receive"]


class UploadSocket(web.WebSocketResponse):
    """Refuses frames over ``max_frame`` from their header, and says why before closing.

    aiohttp checks a frame's declared length before buffering any payload, then closes with
    1009 from inside ``receive()``; ``close`` is the one moment the error can still be sent.
    """

    def __init__(self, *, max_frame: int, **options: Any) -> None:
        # One byte more: aiohttp refuses a message whose length reaches its limit.
        super().__init__(max_msg_size=max_frame + 1, **options)
        self.max_frame = max_frame

    async def close(
        self, *, code: int = WSCloseCode.OK, message: bytes = b"", drain: bool = True
    ) -> bool:
        if code == WSCloseCode.MESSAGE_TOO_BIG and not message and not self.closed:
            error = FrameTooLarge(
                f"a frame was larger than max_frame ({self.max_frame})", max_frame=self.max_frame
            )
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self.send_str(build_message(error_reply(error)))
            message = error.code.encode()
        return await super().close(code=code, message=message, drain=drain)


def application_message(msg: WSMessage) -> WSMessage:
    """``msg`` if it is text or data; a close or an error ends the upload."""
    if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
        return msg
    raise ClientDisconnected(f"the connection ended ({msg.type.name.lower()})")


async def drop_receive(incoming: asyncio.Future[WSMessage]) -> None:
    """Stop waiting for ``incoming`` unless it is done."""
    if incoming.done():
        return
    incoming.cancel()
    await asyncio.wait([incoming])
    if not incoming.cancelled():
        incoming.exception()  # retrieved: the error that ends this is another
