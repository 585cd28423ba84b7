"""Peers that stall: slow request heads, bodies and downloads that stop moving, and
running out of descriptors, against a real ``freight serve`` process (docs/limits.md)."""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import threading
import time
from pathlib import Path

import pytest
from helpers import MiB, create_upload, head_offset, patch_stream, request
from slow_peers import closed_within, raise_own_fd_limit, raw, request_head, serve

TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = "application/offset+octet-stream"
IDLE = 2.0
# A stall is noticed within the idle timeout and a quarter of it; the rest is slack for a
# loaded machine. Without a timeout the server never closes these connections.
CLOSED_BY = IDLE * 1.25 + 4.0


def _patch_head(url: str, offset: int, length: int) -> bytes:
    headers = {**TUS, "Upload-Offset": str(offset), "Content-Type": OCTETS}
    return request_head("PATCH", url, {**headers, "Content-Length": str(length)})


def _kept(url: str) -> int:
    """The upload's offset once the closed request has let go of it (a moment after the
    connection closed, the server may still be recording what it kept)."""
    deadline = time.monotonic() + 5
    while (offset := head_offset(url)) == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    return offset


def test_a_partial_request_head_is_closed_after_the_header_timeout(tmp_path: Path) -> None:
    with serve(tmp_path, "--header-timeout", "1") as server:
        sock = raw(server.port, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: a")
        with sock:
            took = closed_within(sock, 6.0)
        assert took is not None, "a connection that never finished its head stayed open"
        assert took < 4.0


@pytest.mark.parametrize("trickle", [False, True], ids=["silent", "1-byte-per-second"])
def test_a_stalled_body_is_closed_and_the_upload_resumes(tmp_path: Path, trickle: bool) -> None:
    data = os.urandom(3 * MiB)
    with serve(tmp_path, "--idle-timeout", str(IDLE)) as server:
        url = create_upload(server.url, len(data))
        sock = raw(server.port, _patch_head(url, 0, len(data)) + data[:MiB])
        with sock:
            start = time.monotonic()
            position = MiB
            while trickle and time.monotonic() - start < CLOSED_BY:
                try:
                    sock.send(data[position : position + 1])
                except OSError:
                    break
                position += 1
                if closed_within(sock, 1.0) is not None:
                    break
            closed = trickle or closed_within(sock, CLOSED_BY) is not None
            assert closed and time.monotonic() - start < CLOSED_BY, "the body was never closed"
        offset = _kept(url)
        assert 0 < offset <= position  # what arrived before the stall is kept
        reply = patch_stream(url, offset, [data[offset:]], len(data) - offset)
        assert reply.status == 204, (reply.status, reply.body)
        got = request("GET", url)
        assert hashlib.sha256(got.body).digest() == hashlib.sha256(data).digest()
        assert "Traceback" not in server.log_text()


def test_stalled_spliced_bodies_are_closed_and_free_their_threads(tmp_path: Path) -> None:
    """Eight spliced bodies (>= 4 MiB) that stop hold all eight splice threads: each must be
    closed, keep what arrived, and give its thread back for the next eight."""
    size = 8 * MiB
    sent = 5 * MiB
    data = os.urandom(size)
    with serve(tmp_path, "--idle-timeout", str(IDLE)) as server:
        urls = [create_upload(server.url, size) for _ in range(16)]
        baseline = server.pipes()
        first = [raw(server.port, _patch_head(u, 0, size) + data[:sent]) for u in urls[:8]]
        time.sleep(0.5)
        assert server.pipes() >= baseline + 8, "the bodies were not spliced"
        start = time.monotonic()
        for sock in first:
            with sock:
                assert closed_within(sock, CLOSED_BY - (time.monotonic() - start)) is not None
        for url in urls[:8]:
            assert _kept(url) >= 4 * MiB  # what was spliced before the stall is kept
        time.sleep(0.3)
        again = [raw(server.port, _patch_head(u, 0, size) + data[:MiB]) for u in urls[8:]]
        try:
            time.sleep(0.5)
            assert server.pipes() >= baseline + 16, "the splice threads were not given back"
        finally:
            for sock in again:
                sock.close()
        offset = head_offset(urls[0])
        reply = patch_stream(urls[0], offset, [data[offset:]], size - offset)
        assert reply.status == 204, (reply.status, reply.body)
        assert (
            hashlib.sha256(request("GET", urls[0]).body).digest() == hashlib.sha256(data).digest()
        )


def test_a_download_whose_reader_stops_is_closed(tmp_path: Path) -> None:
    size = 64 * MiB
    with serve(tmp_path, "--idle-timeout", str(IDLE)) as server:
        url = create_upload(server.url, size)
        block = os.urandom(MiB)
        assert patch_stream(url, 0, (block for _ in range(64)), size).status == 204
        sock = socket.create_connection(("127.0.0.1", server.port))
        with sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.sendall(request_head("GET", url, {}))
            time.sleep(CLOSED_BY)  # the reader reads nothing meanwhile
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
        # Reset, not closed: the kernel would otherwise trickle the server's send buffer
        # into this small window for minutes after the server gave up on the reader.
        assert drained < 8.0, f"bytes kept coming for {drained:.0f} s after the close"
        assert "Traceback" not in server.log_text()


def test_running_out_of_descriptors_is_a_503_with_retry_after(tmp_path: Path) -> None:
    """Bodies that stop after their heads each hold a socket and a file: at a limit of
    128 descriptors they run the server out; a new upload then hears 503, not 500."""
    with serve(tmp_path, "--idle-timeout", "60", nofile=128) as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("GET", "/health")
        assert conn.getresponse().read()
        head = request_head(
            "POST",
            f"{server.url}/files/",
            {**TUS, "Upload-Length": str(MiB), "Content-Type": OCTETS, "Content-Length": str(MiB)},
        )
        stalled: list[socket.socket] = []
        try:
            for _ in range(90):
                # One at a time: a burst of new connections would exceed the cap on those
                # waiting for a head (a quarter of 128) and drop our idle one first.
                stalled.append(raw(server.port, head + b"x"))
                time.sleep(0.02)
            time.sleep(1.0)
            conn.request("POST", "/files/", headers={**TUS, "Upload-Length": "10"})
            reply = conn.getresponse()
            body = reply.read()
            assert reply.status == 503, (reply.status, body)
            assert b"ERR_RESOURCES_EXHAUSTED" in body
            assert reply.getheader("Retry-After")
        finally:
            conn.close()
            for sock in stalled:
                sock.close()
        log = server.log_text()
        assert "Traceback" not in log
        assert log.count("cannot accept connections") <= 2


@pytest.mark.slow
def test_slow_heads_at_the_descriptor_limit_leave_room_for_clients(tmp_path: Path) -> None:
    """1,020 connections dribbling a request head at a server limited to 1,024 descriptors
    (systemd's default): /health and a 64 MiB upload still succeed within 2 s each, and the
    flood costs under 1 MB of log."""
    count = 1020
    if not raise_own_fd_limit(count + 200):
        pytest.skip("this process may not open enough descriptors")
    with serve(tmp_path, nofile=1024) as server:
        flood = _SlowHeads(server.port, count)
        flood.start()
        try:
            flood.opened.wait(30)
            time.sleep(1.0)
            start = time.monotonic()
            health = request("GET", f"{server.url}/health", timeout=10)
            assert health.status == 200
            assert time.monotonic() - start < 2.0
            data = os.urandom(64 * MiB)
            start = time.monotonic()
            url = create_upload(server.url, len(data))
            reply = patch_stream(url, 0, [data], len(data), timeout=10)
            assert reply.status == 204, (reply.status, reply.body)
            assert time.monotonic() - start < 2.0
        finally:
            flood.stop()
        assert server.log.stat().st_size < 1_000_000
        assert "Traceback" not in server.log_text()


class _SlowHeads(threading.Thread):
    """Keeps ``count`` connections sending one byte of a request head every half second,
    reconnecting those the server drops."""

    def __init__(self, port: int, count: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.count = count
        self.opened = threading.Event()
        self._halt = threading.Event()
        self.reconnects = 0

    def stop(self) -> None:
        self._halt.set()
        self.join(15)

    def _connect(self) -> socket.socket | None:
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=1.0)
            sock.setblocking(False)
            sock.send(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            return sock
        except OSError:
            return None

    def run(self) -> None:
        socks = [self._connect() for _ in range(self.count)]
        self.opened.set()
        deadline = time.monotonic() + 60
        while not self._halt.wait(0.5) and time.monotonic() < deadline:
            for i, sock in enumerate(socks):
                if self._halt.is_set():
                    break
                try:
                    if sock is None:
                        raise OSError
                    sock.send(b"a")
                except OSError:
                    if sock is not None:
                        sock.close()
                    socks[i] = self._connect()
                    self.reconnects += 1
        for sock in socks:
            if sock is not None:
                sock.close()
