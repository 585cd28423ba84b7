"""SIGTERM with transfers in flight, against real ``freight serve`` processes.

The server stops accepting, ends every transfer at its next durable point and exits within
``--shutdown-timeout``; after a restart each client resumes from an offset no lower than the
last one the server acknowledged, and the file's SHA-256 is the one sent.
"""

from __future__ import annotations

import re
import signal
import socket
import time
from pathlib import Path
from typing import Any

from freight.protocol.frames import Hello

from .helpers import MiB, PatternStream, create_upload, download
from .shutdown_peers import TcpPeer, TusPeer, WsPeer, finish_tcp, finish_tus, finish_ws

SHUTDOWN_TIMEOUT = 3.0
# The process is already running: exiting costs closing the engine and joining threads.
# Before, a slow body held it 97 s, a WebSocket upload about 45 s.
EXIT_WITHIN = SHUTDOWN_TIMEOUT + 2.5
SIZE = 48 * MiB
RATE = 6 * MiB
TCP_LINE = re.compile(r"tcp listening on tcp://([^\s]+):(\d+)")


def start(server_factory: Any, data_dir: Path, *args: str) -> Any:
    extra = ["--shutdown-timeout", str(SHUTDOWN_TIMEOUT), *args]
    return server_factory(data_dir=data_dir, args=extra).start()


def terminate(server: Any) -> float:
    """SIGTERM; the seconds until the process was gone (it must exit with 0, quietly)."""
    server.proc.send_signal(signal.SIGTERM)
    began = time.monotonic()
    code = server.proc.wait(60)
    took = time.monotonic() - began
    time.sleep(0.2)  # the output pump reads the last lines
    output = "".join(server.output_tail)
    assert code == 0, output
    assert "Traceback" not in output and "Error" not in output, output
    return took


def tcp_address(server: Any) -> tuple[str, int]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for line in list(server.output_tail):
            match = TCP_LINE.search(line)
            if match:
                return match.group(1), int(match.group(2))
        time.sleep(0.02)
    raise AssertionError("no tcp listening line")


def test_sigterm_during_a_slow_tus_patch(server_factory: Any, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = start(server_factory, data_dir)
    data = PatternStream(SIZE, seed=11)
    url = create_upload(server.url, SIZE)
    peer = TusPeer(url, data, RATE)
    peer.start()
    peer.wait_sent(12 * MiB)
    sent = peer.sent
    took = terminate(server)
    assert took < EXIT_WITHIN, f"exit took {took:.1f} s"
    assert peer.ended.wait(10), "the client's connection was left open"

    again = start(server_factory, data_dir)
    kept = finish_tus(url.replace(server.url, again.url), data)
    # tus acknowledges nothing mid-body: what the server read is kept, bar what sat in the
    # two kernels' socket buffers when it stopped reading.
    assert sent - 8 * MiB <= kept <= peer.sent, (sent, kept)
    assert download(url.replace(server.url, again.url)).sha256 == data.sha256()


def test_sigterm_during_a_websocket_upload(server_factory: Any, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = start(server_factory, data_dir)
    data = PatternStream(SIZE, seed=12)
    peer = WsPeer(server.url, data, RATE)
    peer.start()
    peer.wait_sent(20 * MiB)  # past the first 16 MiB window: one credit came back
    deadline = time.monotonic() + 20
    while peer.acked == 0:
        assert time.monotonic() < deadline, "no credit came"
        time.sleep(0.02)
    acked = peer.acked
    took = terminate(server)
    assert took < EXIT_WITHIN, f"exit took {took:.1f} s"
    assert peer.ended.wait(10)
    # "Going away", with a reason: a client knows to come back (1006 was all it got before).
    assert peer.close_code == 1001, (peer.close_code, peer.close_reason, peer.error)
    assert "shutting down" in peer.close_reason

    again = start(server_factory, data_dir)
    assert peer.upload_id is not None
    kept, sha256 = finish_ws(again.url, peer.upload_id, data)
    assert acked <= kept <= peer.sent, (acked, kept, peer.sent)
    assert sha256 == data.sha256()


def test_sigterm_during_a_tcp_upload(server_factory: Any, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = start(server_factory, data_dir, "--tcp-port", "0")
    data = PatternStream(SIZE, seed=13)
    peer = TcpPeer(*tcp_address(server), data, RATE)
    peer.start()
    peer.wait_sent(20 * MiB)
    deadline = time.monotonic() + 20
    while peer.acked == 0:
        assert time.monotonic() < deadline, "no ACK came"
        time.sleep(0.02)
    acked = peer.acked
    took = terminate(server)
    assert took < EXIT_WITHIN, f"exit took {took:.1f} s"
    assert peer.ended.wait(10)

    again = start(server_factory, data_dir, "--tcp-port", "0")
    assert peer.upload_id is not None
    kept, sha256 = finish_tcp(*tcp_address(again), peer.upload_id, data)
    assert acked <= kept <= peer.sent, (acked, kept, peer.sent)
    assert sha256 == data.sha256()


def test_sigterm_ends_streams_downloads_and_idle_connections(
    server_factory: Any, tmp_path: Path
) -> None:
    """Endless or stalled answers and silent clients never hold the process."""
    data_dir = tmp_path / "data"
    server = start(server_factory, data_dir, "--tcp-port", "0")
    data = PatternStream(32 * MiB, seed=14)
    url = create_upload(server.url, data.size)
    finish_tus(url, data)
    host, port = server.url.removeprefix("http://").split(":")
    opened: list[socket.socket] = []

    def connect(head: bytes, to_port: int = int(port)) -> socket.socket:
        sock = socket.create_connection((host, to_port), timeout=10)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(head)
        opened.append(sock)
        return sock

    path = url.removeprefix(server.url)
    try:
        download_sock = connect(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        download_sock.recv(4096)  # the download started, and its reader stops reading
        events = connect(b"GET /api/events HTTP/1.1\r\nHost: x\r\n\r\n")
        events.recv(4096)
        connect(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").recv(4096)  # idle keep-alive
        key = "dGhlIHNhbXBsZSBub25jZQ=="
        upgrade = (
            "GET /api/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        connect(upgrade.encode()).recv(4096)  # upgraded, never sends its opening
        tcp_port = tcp_address(server)[1]
        connect(Hello().encode(), tcp_port).recv(4096)  # welcomed, never asks for anything
        took = terminate(server)
        assert took < EXIT_WITHIN, f"exit took {took:.1f} s"
    finally:
        for sock in opened:
            sock.close()
