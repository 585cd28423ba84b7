"""TCP GETs sent from sendfile threads: many at once (more than there are threads) arrive
intact, a reader that stops is closed after the idle timeout, and SIGTERM does not wait for
a stalled download. Real ``freight serve`` processes, raw sockets."""

from __future__ import annotations

import hashlib
import socket
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from freight.server.file_sender import MAX_THREADS

from .helpers import MiB, PatternStream, create_upload
from .shutdown_peers import finish_tus
from .test_shutdown import EXIT_WITHIN, start, tcp_address, terminate
from .test_tcp import FILE, GET, RawClient, get_raw

IDLE = 2.0
CLOSED_BY = IDLE * 1.25 + 4.0
DRAINED_WITHIN = 8.0


def stored(server: Any, size: int, seed: int) -> tuple[str, PatternStream]:
    data = PatternStream(size, seed=seed)
    url = create_upload(server.url, size)
    finish_tus(url, data)
    return url.rstrip("/").rsplit("/", 1)[-1], data


def test_more_gets_than_threads_all_arrive_intact(server_factory: Any, tmp_path: Path) -> None:
    server = start(server_factory, tmp_path / "data", "--tcp-port", "0")
    upload_id, data = stored(server, 24 * MiB + 17, seed=3)
    whole = b"".join(data.chunks(0))
    port = tcp_address(server)[1]
    wanted = [(i * 997 * 1024 + i, 9 * MiB + i) for i in range(MAX_THREADS + 8)]

    def fetch(offset: int, length: int) -> bytes:
        client = RawClient(port)
        try:
            client.hello()
            return get_raw(client, upload_id, offset, length)[1]
        finally:
            client.close()

    with ThreadPoolExecutor(len(wanted)) as pool:
        digests = list(pool.map(lambda range_: fetch(*range_), wanted))
    for (offset, length), digest in zip(wanted, digests, strict=True):
        assert digest == hashlib.sha256(whole[offset : offset + length]).digest()
    terminate(server)


def stalled_get(port: int, upload_id: str, size: int) -> socket.socket:
    """A GET of the whole file by a client that then reads nothing."""
    client = RawClient(port)
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.hello()
    client.send(GET, struct.pack(">QQ", 0, size) + upload_id.encode())
    client.expect(FILE)
    return client.sock


def test_a_tcp_download_whose_reader_stops_is_closed(server_factory: Any, tmp_path: Path) -> None:
    size = 64 * MiB
    server = start(
        server_factory, tmp_path / "data", "--tcp-port", "0", "--idle-timeout", str(IDLE)
    )
    upload_id, _ = stored(server, size, seed=4)
    sock = stalled_get(tcp_address(server)[1], upload_id, 64 * MiB)
    with sock:
        time.sleep(CLOSED_BY)
        received = 0
        sock.settimeout(5.0)
        began = time.monotonic()
        try:
            while piece := sock.recv(MiB):
                received += len(piece)
        except (ConnectionError, TimeoutError):
            pass
        drained = time.monotonic() - began
    assert received < size, "the stalled download was never closed"
    # The connection is reset, not closed: a plain close left the kernel trickling the
    # server's 8 MiB send buffer into this 4 KiB window for 3.5 minutes.
    assert drained < DRAINED_WITHIN, f"bytes kept coming for {drained:.0f} s after the close"
    output = "".join(server.output_tail)
    assert "Traceback" not in output, output


def test_sigterm_does_not_wait_for_a_stalled_tcp_download(
    server_factory: Any, tmp_path: Path
) -> None:
    server = start(server_factory, tmp_path / "data", "--tcp-port", "0")
    upload_id, _ = stored(server, 64 * MiB, seed=5)
    sock = stalled_get(tcp_address(server)[1], upload_id, 64 * MiB)
    with sock:
        time.sleep(0.5)  # the thread is waiting for room by now
        took = terminate(server)
    assert took < EXIT_WITHIN, f"exit took {took:.1f} s"


def test_a_get_after_a_get_on_one_connection(server_factory: Any, tmp_path: Path) -> None:
    """The connection reads its next request once a download's thread is done with it."""
    server = start(server_factory, tmp_path / "data", "--tcp-port", "0")
    upload_id, data = stored(server, 6 * MiB, seed=6)
    whole = b"".join(data.chunks(0))
    client = RawClient(tcp_address(server)[1])
    try:
        client.hello()
        for offset, length in ((0, 6 * MiB), (MiB + 3, 4 * MiB), (6 * MiB - 1, 1)):
            _, digest = get_raw(client, upload_id, offset, length)
            assert digest == hashlib.sha256(whole[offset : offset + length]).digest()
    finally:
        client.close()
    terminate(server)
