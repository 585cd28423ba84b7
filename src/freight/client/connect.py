"""Opening a plain TCP connection for the clients that drive their own socket."""

from __future__ import annotations

import asyncio
import socket

from freight.same_host import socket_for

__all__ = ["connect_first"]


async def connect_first(host: str, port: int) -> socket.socket:
    """A non-blocking socket connected to the first of ``host``'s addresses that answers;
    the last address's error if none does. A socket is never left open on the way out,
    not even when the caller is cancelled mid-connect."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    failure: OSError = OSError(f"no address for {host}")
    for info in infos:
        sock = socket_for(info)
        address = info[4]
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, address)
        except OSError as exc:
            sock.close()
            failure = exc
            continue
        except BaseException:
            sock.close()
            raise
        return sock
    raise failure
