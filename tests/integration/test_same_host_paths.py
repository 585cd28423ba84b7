"""A ``freight serve`` on 127.0.0.1 hands its connections (HTTP and raw TCP) a congestion
control that does not pace, where the system's choice (BBR) would: only this host reaches
it. Read from the kernel's own account of the connections (``ss``)."""

from __future__ import annotations

import re
import socket
import subprocess
from pathlib import Path
from typing import Any

from freight.same_host import UNPACED

from .test_shutdown import start, tcp_address

DEFAULT = Path("/proc/sys/net/ipv4/tcp_congestion_control").read_text().strip()
NAMES = re.compile(r"\b(bbr\d?|cubic|reno)\b")


def server_side_congestion(port: int) -> list[str]:
    """The congestion control of each established connection whose local port is ``port``."""
    out = subprocess.run(
        ["ss", "-tinH", "state", "established", f"( sport = :{port} )"],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    ).stdout
    return NAMES.findall(out)


def expected() -> set[str]:
    return {n.decode() for n in UNPACED} if DEFAULT.startswith("bbr") else {DEFAULT}


def test_connections_to_a_loopback_server_do_not_pace(server_factory: Any, tmp_path: Path) -> None:
    server = start(server_factory, tmp_path / "data", "--tcp-port", "0")
    _, tcp_port = tcp_address(server)
    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=10) as http,
        socket.create_connection(("127.0.0.1", tcp_port), timeout=10) as tcp,
    ):
        http.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert http.recv(64).startswith(b"HTTP/1.1 200")
        assert tcp.fileno() >= 0
        names = server_side_congestion(server.port) + server_side_congestion(tcp_port)
    assert len(names) == 2, names
    assert set(names) <= expected(), names
