"""Which upload protocol ``freight send --protocol NAME`` uses.

Every uploader takes a path, a server URL and one
:class:`~freight.client.options.TransferOptions`, the keyword ``on_start`` and ``parallel``
(how many streams a protocol that can use several may open), and returns an
:class:`~freight.client.upload.UploadResult`, so the CLI treats them alike.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from freight.client.chunks import upload_chunks
from freight.client.options import TransferOptions
from freight.client.tcp import upload_tcp
from freight.client.upload import UploadResult, upload_file
from freight.client.ws import upload_file_ws

__all__ = ["DEFAULT_PROTOCOL", "UPLOADERS", "Uploader"]

Uploader = Callable[..., Coroutine[Any, Any, UploadResult]]


async def _tus(
    path: Path, server_url: str, options: TransferOptions, *, parallel: int, **specific: Any
) -> UploadResult:
    # One PATCH stream: the server syncs and acknowledges as it goes, so one is enough.
    del parallel
    return await upload_file(path, server_url, options, **specific)


DEFAULT_PROTOCOL = "tus"
# chunks: fixed-size chunks through /api/uploads, `parallel` at a time (fits body-size limits).
# ws: one WebSocket at /api/ws with credit flow control (docs/websocket.md).
# tcp: freight's raw TCP protocol to tcp://host:port (docs/protocol.md).
UPLOADERS: dict[str, Uploader] = {
    "tus": _tus,
    "chunks": upload_chunks,
    "ws": upload_file_ws,
    "tcp": upload_tcp,
}
