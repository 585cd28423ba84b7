"""The clients reach a server on this host without paced sends (freight.same_host): both
the sockets they drive themselves and aiohttp's. The client's side of each connection is
read where it is opened; the server here is a plain asyncio one on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from freight.client.connect import connect_first
from freight.client.http import open_session
from freight.same_host import UNPACED

DEFAULT = Path("/proc/sys/net/ipv4/tcp_congestion_control").read_text().strip()
BODY = b"ok" * (2 * 1024 * 1024)
EXPECTED = {n.decode() for n in UNPACED} if DEFAULT.startswith("bbr") else {DEFAULT}


def congestion(sock: socket.socket) -> str:
    raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16)
    return raw.rstrip(b"\0").decode()


async def answering_server() -> asyncio.Server:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        # A body longer than the client reads at once: its connection stays in use
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(BODY) + BODY)
        await writer.drain()
        await reader.read()  # until the client lets go
        writer.close()

    return await asyncio.start_server(answer, "127.0.0.1", 0)


async def test_a_socket_the_client_drives_does_not_pace() -> None:
    server = await answering_server()
    async with server:
        sock = await connect_first("127.0.0.1", server.sockets[0].getsockname()[1])
        with sock:
            assert congestion(sock) in EXPECTED


async def test_an_aiohttp_session_reaches_this_host_without_pacing() -> None:
    server = await answering_server()
    async with server, open_session() as session:
        port = server.sockets[0].getsockname()[1]
        async with session.get(f"http://127.0.0.1:{port}/") as resp:
            assert resp.connection is not None and resp.connection.transport is not None
            sock = resp.connection.transport.get_extra_info("socket")
            assert congestion(sock) in EXPECTED
            assert await resp.read() == BODY
