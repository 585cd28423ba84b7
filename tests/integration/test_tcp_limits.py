"""The raw TCP listener keeps silent connections from holding its descriptors: HELLO is due
within the header timeout, and at most ``--max-pending`` connections may wait to send it."""

from __future__ import annotations

import asyncio
import re
import socket
import time
from pathlib import Path
from typing import Any

from helpers import MiB
from slow_peers import closed_within, serve

from freight.client.tcp import upload_tcp

TCP_LINE = re.compile(r"tcp listening on tcp://127\.0\.0\.1:(\d+)")


def _tcp_port(server: Any) -> int:
    """The TCP listener's port, once the server's log names it (read afresh each time)."""
    deadline = time.monotonic() + 20
    while not (match := TCP_LINE.search(server.log_text())):
        assert time.monotonic() < deadline, server.log_text()
        time.sleep(0.05)
    return int(match.group(1))


def _silent(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def test_a_connection_without_hello_is_closed_after_the_header_timeout(tmp_path: Path) -> None:
    with serve(tmp_path, "--tcp-port", "0", "--header-timeout", "1") as server:
        port = _tcp_port(server)
        with _silent(port) as sock:
            took = closed_within(sock, 8.0)
        assert took is not None, "a TCP connection that never sent HELLO stayed open"
        assert took < 5.0
        assert "Traceback" not in server.log_text()


def test_silent_connections_past_the_cap_go_oldest_first(tmp_path: Path) -> None:
    args = ("--tcp-port", "0", "--header-timeout", "30", "--max-pending", "4")
    with serve(tmp_path, *args) as server:
        port = _tcp_port(server)
        socks = [_silent(port) for _ in range(10)]
        try:
            time.sleep(0.5)  # let the server accept them all
            oldest = [closed_within(sock, 3.0) for sock in socks[:6]]
            assert all(t is not None for t in oldest), oldest
            newest = [closed_within(sock, 0.5) for sock in socks[6:]]
            assert newest == [None] * 4, "the newest waiting connections were dropped"
            # Room for a client with something to send, even with the cap full again.
            source = tmp_path / "a.bin"
            source.write_bytes(b"x" * MiB)
            result = asyncio.run(upload_tcp(source, f"tcp://127.0.0.1:{port}"))
            assert result.size == MiB and result.verified
        finally:
            for sock in socks:
                sock.close()
