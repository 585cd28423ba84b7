"""The raw TCP protocol against a real ``freight serve --tcp-port 0`` subprocess.

Two clients drive it: freight's own (``upload_tcp`` / ``download_tcp``) and :class:`RawClient`,
written from docs/protocol.md with ``struct`` only, so the server is also checked against
an independent reading of the spec. Cuts come from the CLI tests' fault-injecting proxy.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import re
import socket
import struct
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import freight.client.tcp_download
import freight.client.tcp_upload
from freight.client import ResumeStore, RetryPolicy
from freight.client.errors import ConnectionFailed
from freight.client.hashing import SplitHasher
from freight.client.options import TransferOptions
from freight.client.partfile import part_path
from freight.client.resume_store import DownloadKey, DownloadState
from freight.client.tcp import TcpServerError, download_tcp, upload_tcp
from freight.protocol.frames import DataChunk

from .helpers import MiB, PatternStream

sys.path.insert(0, str(Path(__file__).parents[1] / "cli"))
from cli_support import ChaosProxy, _Rule

WINDOW = 16 * MiB  # the server's default window
TCP_LINE = re.compile(r"tcp listening on (tcp://[^\s]+)")
FAST_RETRIES = RetryPolicy(attempts=5, initial_delay=0.05, max_delay=0.2)
NO_RETRIES = RetryPolicy(attempts=0)

# frame types and header layout, from docs/protocol.md
HELLO, WELCOME, PUT, RESUME, GET, ACCEPTED, DATA, ACK, DONE, FINISHED, FILE, ERROR = range(1, 13)
HEADER = struct.Struct(">BBHI")


# a server and an independent client ------------------------------------------------------------


class TcpServer:
    """A running ``freight serve --tcp-port 0``: its ``url``, ``port`` and process."""

    def __init__(self, process: Any) -> None:
        self.process = process
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            found = [TCP_LINE.search(line) for line in list(process.output_tail)]
            match = next((m for m in found if m), None)
            if match:
                self.url = match.group(1)
                self.port = int(self.url.rsplit(":", 1)[1])
                return
            time.sleep(0.02)
        raise AssertionError(f"no tcp listening line: {list(process.output_tail)}")

    @property
    def pid(self) -> int:
        return int(self.process.pid)


@pytest.fixture
def start_tcp_server(server_factory: Any, tmp_path: Path) -> Any:
    def start(*args: str) -> TcpServer:
        data = tmp_path / "data"
        return TcpServer(server_factory(data_dir=data, args=["--tcp-port", "0", *args]).start())

    return start


@pytest.fixture
def tcp_server(start_tcp_server: Any) -> TcpServer:
    return start_tcp_server()  # type: ignore[no-any-return]


class RawClient:
    """A blocking client that knows only docs/protocol.md (no freight imports)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.window = 0

    def close(self) -> None:
        self.sock.close()

    def send(self, frame_type: int, body: bytes, flags: int = 0) -> None:
        self.sock.sendall(HEADER.pack(frame_type, flags, 0, len(body)) + body)

    def read_exact(self, count: int) -> bytes:
        parts = bytearray()
        while len(parts) < count:
            got = self.sock.recv(count - len(parts))
            if not got:
                raise EOFError(f"closed after {len(parts)} of {count} bytes")
            parts += got
        return bytes(parts)

    def frame(self) -> tuple[int, bytes]:
        frame_type, _, _, length = HEADER.unpack(self.read_exact(8))
        return frame_type, self.read_exact(length)

    def expect(self, wanted: int) -> bytes:
        frame_type, body = self.frame()
        assert frame_type == wanted, (
            frame_type,
            parse_error(body) if frame_type == ERROR else body,
        )
        return body

    def hello(self, token: bytes = b"", version: int = 1) -> None:
        self.send(HELLO, b"FRGT" + struct.pack(">H", version) + token)
        _, _, self.window, _ = struct.unpack(">HHII", self.expect(WELCOME))

    def put(self, size: int, name: bytes = b"raw.bin") -> str:
        self.send(PUT, struct.pack(">Q", size) + bytes(32) + name)
        body = self.expect(ACCEPTED)
        assert struct.unpack_from(">QQ", body) == (0, size)
        return body[16:].decode()

    def data(self, offset: int, payload: bytes) -> None:
        self.sock.sendall(HEADER.pack(DATA, 0, 0, 8 + len(payload)) + struct.pack(">Q", offset))
        self.sock.sendall(payload)

    def done(self, digest: bytes) -> tuple[int, bytes]:
        self.send(DONE, digest)
        return self.frame()


def send_range(client: RawClient, pattern: PatternStream, start: int, end: int) -> None:
    """DATA frames of one block each for ``[start, end)`` of ``pattern``."""
    position = start
    for block in pattern.chunks(start, end):
        client.data(position, block)
        position += len(block)


def parse_error(body: bytes) -> tuple[str, str, int]:
    detail, code_length = struct.unpack_from(">QB", body)
    code = body[9 : 9 + code_length].decode()
    return code, body[9 + code_length :].decode(), detail


def expect_error(client: RawClient, code: str) -> tuple[str, int]:
    found, message, detail = parse_error(client.expect(ERROR))
    assert found == code, message
    return message, detail


def upload_raw(client: RawClient, blocks: Iterator[bytes], size: int) -> tuple[str, list[int]]:
    """PUT, then DATA obeying the credit (two windows past the last ACK); returns id, ACKs."""
    upload_id = client.put(size)
    acked, position, acks, digest = 0, 0, [], hashlib.sha256()
    for block in blocks:
        while position + len(block) > acked + 2 * client.window:
            acked = struct.unpack(">Q", client.expect(ACK))[0]
            acks.append(acked)
        client.data(position, block)
        digest.update(block)
        position += len(block)
    frame_type, body = client.done(digest.digest())
    while frame_type == ACK:
        acks.append(struct.unpack(">Q", body)[0])
        frame_type, body = client.frame()
    assert frame_type == FINISHED, parse_error(body) if frame_type == ERROR else body
    size_back, digest_back = struct.unpack_from(">Q32s", body)
    assert (size_back, digest_back, body[40:].decode()) == (size, digest.digest(), upload_id)
    return upload_id, acks


def get_raw(client: RawClient, upload_id: str, offset: int, length: int) -> tuple[bytes, bytes]:
    """GET: returns the FILE body and the SHA-256 of the DATA payload that followed."""
    client.send(GET, struct.pack(">QQ", offset, length) + upload_id.encode())
    info = client.expect(FILE)
    _, got_offset, got_length, _ = struct.unpack_from(">QQQ32s", info)
    assert got_offset == offset
    digest, position = hashlib.sha256(), offset
    while position < offset + got_length:
        body = client.expect(DATA)
        assert struct.unpack_from(">Q", body)[0] == position
        digest.update(body[8:])
        position += len(body) - 8
    return info, digest.digest()


def start_upload(port: int, pattern: PatternStream, sent: int) -> tuple[RawClient, str]:
    """PUT ``pattern`` and send its first ``sent`` bytes; the first window must be ACKed."""
    client = RawClient(port)
    client.hello()
    upload_id = client.put(pattern.size)
    send_range(client, pattern, 0, sent)
    assert struct.unpack(">Q", client.expect(ACK))[0] == WINDOW
    return client, upload_id


# round trips through freight's client -----------------------------------------------------------


async def round_trip(server: TcpServer, source: Path, tmp_path: Path, expected: str) -> None:
    store = ResumeStore(tmp_path / "state")
    sent = await upload_tcp(source, server.url, TransferOptions(resume_store=store))
    assert sent.sha256 == expected and sent.verified
    assert sent.url.startswith(server.url + "/")
    target = tmp_path / "copy.bin"
    fetched = await download_tcp(sent.url, target, TransferOptions(resume_store=store))
    assert fetched.sha256 == expected and fetched.size == source.stat().st_size
    assert hashlib.sha256(target.read_bytes()).hexdigest() == expected


@pytest.mark.parametrize("size", [0, 1, WINDOW, WINDOW + 1, 3 * WINDOW + 12345])
async def test_round_trip(tcp_server: TcpServer, tmp_path: Path, size: int) -> None:
    pattern = PatternStream(size, seed=size)
    source = pattern.write_to(tmp_path / "source.bin")
    await round_trip(tcp_server, source, tmp_path, pattern.sha256())


@pytest.mark.slow
async def test_round_trip_of_1_gib(tcp_server: TcpServer, tmp_path: Path) -> None:
    pattern = PatternStream(1024 * MiB, seed=7)  # written block by block, never held whole
    source = pattern.write_to(tmp_path / "source.bin")
    await round_trip(tcp_server, source, tmp_path, pattern.sha256())


# resuming after cuts -----------------------------------------------------------------------------


@pytest.fixture
def proxy_to(tcp_server: TcpServer) -> Iterator[ChaosProxy]:
    proxy = ChaosProxy(tcp_server.port).start()
    yield proxy
    proxy.stop()


def tcp_url(proxy: ChaosProxy) -> str:
    return f"tcp://127.0.0.1:{proxy.port}"


async def test_upload_resumes_after_cuts_at_random_points(
    proxy_to: ChaosProxy, tmp_path: Path
) -> None:
    size = 4 * WINDOW + 777
    pattern = PatternStream(size, seed=3)
    source = pattern.write_to(tmp_path / "source.bin")
    rng = random.Random(2024)
    for round_ in range(6):  # bounded: six cut points, one upload each
        cut = rng.randrange(1, size)
        proxy_to.reset(up=_Rule(cut_after=cut))
        store = ResumeStore(tmp_path / f"state{round_}")
        sent = await upload_tcp(
            source, tcp_url(proxy_to), TransferOptions(resume_store=store, retry=FAST_RETRIES)
        )
        assert sent.sha256 == pattern.sha256(), cut
        # The retry resumed at the server's durable offset: far less than a second full send.
        assert proxy_to.counted["up"] < size + 2 * WINDOW + MiB, (cut, proxy_to.counted)


async def test_a_new_run_resumes_the_remembered_upload(
    proxy_to: ChaosProxy, tmp_path: Path
) -> None:
    size = 5 * WINDOW
    pattern = PatternStream(size, seed=4)
    source = pattern.write_to(tmp_path / "source.bin")
    store = ResumeStore(tmp_path / "state")
    proxy_to.reset(up=_Rule(cut_after=3 * WINDOW + 5000))
    with pytest.raises(ConnectionFailed):
        await upload_tcp(
            source, tcp_url(proxy_to), TransferOptions(resume_store=store, retry=NO_RETRIES)
        )
    sent = await upload_tcp(
        source, tcp_url(proxy_to), TransferOptions(resume_store=store, retry=NO_RETRIES)
    )
    assert sent.sha256 == pattern.sha256()
    assert sent.resumed_from >= 2 * WINDOW  # at least the ACKed windows were kept


async def test_a_slow_hash_hangs_up_instead_of_idling(
    proxy_to: ChaosProxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Sending can outrun hashing (big file, slow CPU). Rather than sit silent on an open
    # connection the server would time out, the client hangs up, finishes the hash, and
    # comes back with RESUME (answered at the full size) and DONE.
    monkeypatch.setattr(freight.client.tcp_upload, "HASH_GRACE", 0.0)
    finish = SplitHasher.finish

    async def slow_finish(self: SplitHasher, total: int) -> bytes:
        await asyncio.sleep(0.5)
        return await finish(self, total)

    monkeypatch.setattr(SplitHasher, "finish", slow_finish)
    pattern = PatternStream(2 * WINDOW + 5, seed=12)
    source = pattern.write_to(tmp_path / "source.bin")
    proxy_to.reset()
    sent = await upload_tcp(source, tcp_url(proxy_to), TransferOptions(retry=NO_RETRIES))
    assert sent.sha256 == pattern.sha256()
    assert proxy_to.connections == 2
    assert proxy_to.counted["up"] < 2 * WINDOW + MiB  # the second connection sent no DATA


async def test_download_resumes_from_its_part_file(proxy_to: ChaosProxy, tmp_path: Path) -> None:
    size = 5 * WINDOW + 3
    pattern = PatternStream(size, seed=5)
    source = pattern.write_to(tmp_path / "source.bin")
    store = ResumeStore(tmp_path / "state")
    sent = await upload_tcp(source, tcp_url(proxy_to), TransferOptions(resume_store=store))
    target = tmp_path / "copy.bin"
    proxy_to.reset(down=_Rule(cut_after=2 * WINDOW + 999))
    with pytest.raises(ConnectionFailed):
        await download_tcp(sent.url, target, TransferOptions(resume_store=store, retry=NO_RETRIES))
    kept = part_path(target).stat().st_size
    assert WINDOW < kept < size
    fetched = await download_tcp(
        sent.url, target, TransferOptions(resume_store=store, retry=NO_RETRIES)
    )
    assert fetched.resumed_from == kept  # a GET from the .part's size
    assert not fetched.restarted
    assert fetched.sha256 == pattern.sha256()
    assert hashlib.sha256(target.read_bytes()).hexdigest() == pattern.sha256()


async def test_download_survives_cuts_at_random_points(
    proxy_to: ChaosProxy, tmp_path: Path
) -> None:
    size = 3 * WINDOW + 17
    pattern = PatternStream(size, seed=6)
    source = pattern.write_to(tmp_path / "source.bin")
    sent = await upload_tcp(source, tcp_url(proxy_to))
    rng = random.Random(99)
    for round_ in range(4):
        proxy_to.reset(down=_Rule(cut_after=rng.randrange(1, size)))
        target = tmp_path / f"copy{round_}.bin"
        store = ResumeStore(tmp_path / f"state{round_}")
        fetched = await download_tcp(
            sent.url, target, TransferOptions(resume_store=store, retry=FAST_RETRIES)
        )
        assert fetched.sha256 == pattern.sha256()


async def test_a_changed_file_is_never_spliced(tcp_server: TcpServer, tmp_path: Path) -> None:
    pattern = PatternStream(2 * WINDOW, seed=8)
    source = pattern.write_to(tmp_path / "source.bin")
    store = ResumeStore(tmp_path / "state")
    sent = await upload_tcp(source, tcp_server.url, TransferOptions(resume_store=store))
    target = tmp_path / "copy.bin"
    part = part_path(target)
    part.write_bytes(b"x" * WINDOW)  # bytes of some other version of the file
    other = DownloadState(etag=hashlib.sha256(b"other").hexdigest(), size=2 * WINDOW)
    store.put_download(DownloadKey.for_part(part, sent.url), other)
    fetched = await download_tcp(sent.url, target, TransferOptions(resume_store=store))
    assert fetched.restarted and fetched.resumed_from == 0
    assert hashlib.sha256(target.read_bytes()).hexdigest() == pattern.sha256()


async def test_the_download_sink_never_reads_a_reused_buffer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Batches of every size, empty ones included (a read that ended inside a header), with
    # the buffer that _receive would read into next scribbled over as soon as add returns,
    # and hashing slower than writing: the file and its digest must still be exact.
    feed = freight.client.tcp_download._feed

    def slow_feed(hasher: SplitHasher, chunks: Any) -> None:
        time.sleep(0.002)
        feed(hasher, chunks)

    monkeypatch.setattr(freight.client.tcp_download, "_feed", slow_feed)
    rng = random.Random(5)
    part = tmp_path / "out.part"
    fd = os.open(part, os.O_RDWR | os.O_CREAT, 0o600)
    hasher = SplitHasher(part, 0)
    expected, position, positions = hashlib.sha256(), 0, []
    buffers = [bytearray(4096) for _ in range(3)]
    sink = freight.client.tcp_download._PartSink(fd, hasher, positions.append)
    try:
        for turn in range(300):
            buffer = buffers[turn % 3]
            size = rng.choice([0, 0, 1, 17, 4096, rng.randrange(4096)])
            buffer[:size] = rng.randbytes(size)
            expected.update(buffer[:size])
            chunks = [DataChunk(position, memoryview(buffer)[:size])] if size else []
            position += size
            await sink.add(chunks)
            buffers[(turn + 1) % 3][:] = b"\xee" * 4096  # the next receive, right away
        await sink.close()
    finally:
        os.close(fd)
    assert positions[-1] == position
    assert hashlib.sha256(part.read_bytes()).digest() == expected.digest()
    assert await hasher.finish(position) == expected.digest()


# the protocol, spoken by hand --------------------------------------------------------------------


@pytest.mark.parametrize("store", ["local", "memory"])
def test_raw_client_upload_acks_per_window_and_get_from_an_offset(
    start_tcp_server: Any, store: str
) -> None:
    """Over both stores: a GET with sendfile, and streamed from one without it."""
    tcp_server = start_tcp_server("--store", store)
    size = 3 * WINDOW + 100
    pattern = PatternStream(size, seed=9)
    client = RawClient(tcp_server.port)
    try:
        client.hello()
        assert client.window == WINDOW
        upload_id, acks = upload_raw(client, pattern.chunks(), size)
        assert acks == [WINDOW, 2 * WINDOW, 3 * WINDOW]  # one ACK per window, none per chunk
        offset = WINDOW + 12345
        info, digest = get_raw(client, upload_id, offset, 2**64 - 1)
        file_size, _, length, file_digest = struct.unpack_from(">QQQ32s", info)
        assert (file_size, length, info[56:]) == (size, size - offset, b"raw.bin")
        assert file_digest.hex() == pattern.sha256()
        tail = b"".join(pattern.chunks(offset))
        assert digest == hashlib.sha256(tail).digest()
        _, digest = get_raw(client, upload_id, 5, 10)  # a range: the same connection, again
        assert digest == hashlib.sha256(b"".join(pattern.chunks(5, 15))).digest()
    finally:
        client.close()


def test_resume_continues_at_the_durable_offset(tcp_server: TcpServer) -> None:
    size = 2 * WINDOW
    pattern = PatternStream(size, seed=10)
    first, upload_id = start_upload(tcp_server.port, pattern, WINDOW + 10)
    first.close()  # a cut: the 10 bytes past the ACK are kept once they are on disk
    second = RawClient(tcp_server.port)
    try:
        second.hello()
        for _ in range(50):  # the server may not have noticed the cut yet
            second.send(RESUME, upload_id.encode())
            frame_type, body = second.frame()
            if frame_type != ERROR or parse_error(body)[0] != "ERR_UPLOAD_LOCKED":
                break
            time.sleep(0.05)
        assert frame_type == ACCEPTED, parse_error(body)
        offset, total = struct.unpack_from(">QQ", body)
        assert WINDOW <= offset <= WINDOW + 10 and total == size
        send_range(second, pattern, offset, size)
        frame_type, body = second.done(bytes.fromhex(pattern.sha256()))
        while frame_type == ACK:
            frame_type, body = second.frame()
        assert frame_type == FINISHED
        second.send(RESUME, upload_id.encode())  # resuming a finished upload: FINISHED again
        assert second.expect(FINISHED)[8:40].hex() == pattern.sha256()
    finally:
        second.close()


def test_a_reconnect_takes_over_from_a_stalled_connection(tcp_server: TcpServer) -> None:
    """The old connection stays open and silent (a dead link the server cannot see)."""
    size = 2 * WINDOW
    pattern = PatternStream(size, seed=11)
    stalled, upload_id = start_upload(tcp_server.port, pattern, WINDOW + 4096)
    second = RawClient(tcp_server.port)
    try:
        second.hello()
        started = time.monotonic()
        second.send(RESUME, upload_id.encode())
        body = second.expect(ACCEPTED)
        assert time.monotonic() - started < 3  # not the idle timeout, not a lock error
        offset, total = struct.unpack_from(">QQ", body)
        assert WINDOW <= offset <= WINDOW + 4096 and total == size
        stalled.sock.settimeout(5)
        with pytest.raises((EOFError, ConnectionError)):
            stalled.frame()  # the server closed the stalled connection
        send_range(second, pattern, offset, size)
        frame_type, body = second.done(bytes.fromhex(pattern.sha256()))
        while frame_type == ACK:
            frame_type, body = second.frame()
        assert frame_type == FINISHED
        assert body[8:40].hex() == pattern.sha256()
    finally:
        stalled.close()
        second.close()


async def test_a_server_without_hashing_checks_declared_digests_and_serves_files(
    start_tcp_server: Any, tmp_path: Path
) -> None:
    """``--no-sha256``: DONE's digest is checked by reading back; a file nobody declared a
    digest for is served with an all-zero one, which the client takes as "unknown"."""
    server = start_tcp_server("--no-sha256")
    pattern = PatternStream(3 * MiB + 5, seed=12)
    source = pattern.write_to(tmp_path / "source.bin")
    sent = await upload_tcp(
        source, server.url, TransferOptions(resume_store=ResumeStore(tmp_path / "state"))
    )
    assert sent.sha256 == pattern.sha256() and sent.verified
    fetched = await download_tcp(sent.url, tmp_path / "copy.bin")
    assert fetched.sha256 == pattern.sha256() and fetched.verified  # declared, then checked
    http = server.process.url
    tus = {"Tus-Resumable": "1.0.0"}
    async with aiohttp.ClientSession() as session:
        created = {**tus, "Upload-Length": str(pattern.size)}
        async with session.post(f"{http}/files/", headers=created) as resp:
            location = resp.headers["Location"]
        patch = {**tus, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"}
        async with session.patch(
            f"{http}{location}", data=source.read_bytes(), headers=patch
        ) as resp:
            assert resp.status == 204
    upload_id = location.rsplit("/", 1)[1]
    target = tmp_path / "plain.bin"
    plain = await download_tcp(f"{server.url}/{upload_id}", target)
    assert plain.sha256 == pattern.sha256() and not plain.verified
    assert target.read_bytes() == source.read_bytes()


@pytest.mark.parametrize("server_hashes", [True, False], ids=["sha256", "no-sha256"])
async def test_a_client_that_does_not_hash_sends_done_with_zeros(
    start_tcp_server: Any, tmp_path: Path, server_hashes: bool
) -> None:
    """A device too small to hash sends DONE with 32 zero bytes: nothing is checked, and
    FINISHED tells it the server's digest (zeros too when the server keeps none)."""
    server = start_tcp_server() if server_hashes else start_tcp_server("--no-sha256")
    pattern = PatternStream(2 * WINDOW + 77, seed=21)
    source = pattern.write_to(tmp_path / "source.bin")
    sent = await upload_tcp(source, server.url, verify=False)
    assert not sent.verified
    assert sent.sha256 == (pattern.sha256() if server_hashes else "")
    target = tmp_path / "copy.bin"
    fetched = await download_tcp(sent.url, target)
    assert fetched.verified == server_hashes
    assert hashlib.sha256(target.read_bytes()).hexdigest() == pattern.sha256()


def test_raw_done_with_zeros_is_not_a_checksum_mismatch(tcp_server: TcpServer) -> None:
    pattern = PatternStream(WINDOW // 2, seed=5)
    client = RawClient(tcp_server.port)
    client.hello()
    upload_id = client.put(pattern.size)
    send_range(client, pattern, 0, pattern.size)
    client.send(DONE, bytes(32))
    kind, body = client.frame()
    while kind == ACK:
        kind, body = client.frame()
    assert kind == FINISHED, (kind, body)
    assert body[8:40] == bytes.fromhex(pattern.sha256())
    assert body[40:].decode() == upload_id
    client.close()


def test_errors_answering_a_request_keep_the_connection(tcp_server: TcpServer) -> None:
    client = RawClient(tcp_server.port)
    try:
        client.hello()
        client.send(RESUME, b"no-such-upload")
        expect_error(client, "ERR_UPLOAD_NOT_FOUND")
        client.send(GET, struct.pack(">QQ", 0, 1) + b"no-such-upload")
        expect_error(client, "ERR_UPLOAD_NOT_FOUND")
        unfinished = client.put(10)
        _, body = client.done(bytes(32))  # DONE before any DATA
        assert parse_error(body)[0] == "ERR_LENGTH_MISMATCH"
        client.send(GET, struct.pack(">QQ", 0, 1) + unfinished.encode())
        expect_error(client, "ERR_UPLOAD_INCOMPLETE")
        client.send(RESUME, unfinished.encode())
        assert struct.unpack_from(">QQ", client.expect(ACCEPTED)) == (0, 10)
        client.data(0, b"0123456789")
        _, body = client.done(b"\x01" * 32)  # the wrong SHA-256 (zeros would mean "none")
        assert parse_error(body)[0] == "ERR_CHECKSUM_MISMATCH"
        upload_id, _ = upload_raw(client, iter([b"0123456789"]), 10)
        client.send(GET, struct.pack(">QQ", 11, 1) + upload_id.encode())
        assert expect_error(client, "ERR_RANGE_NOT_SATISFIABLE")[1] == 10
        client.send(PUT, struct.pack(">Q", 2**62) + bytes(32))
        assert expect_error(client, "ERR_INSUFFICIENT_STORAGE")[1] >= 0
        client.put(1)  # still usable after all of that
    finally:
        client.close()


@pytest.mark.parametrize(
    ("send", "code"),
    [
        (lambda c: c.send(HELLO, b"FRGT\x00\x02"), "ERR_UNSUPPORTED_VERSION"),
        (lambda c: c.send(HELLO, b"NOPE\x00\x01"), "ERR_MALFORMED_FRAME"),
        (lambda c: c.send(PUT, struct.pack(">Q", 1) + bytes(32)), "ERR_UNEXPECTED_FRAME"),
        (lambda c: c.sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"), "ERR_UNKNOWN_FRAME"),
        (lambda c: c.sock.sendall(HEADER.pack(HELLO, 0, 0, 2**31)), "ERR_FRAME_TOO_LARGE"),
    ],
)
def test_handshake_failures_are_typed_and_close(
    tcp_server: TcpServer, send: Any, code: str
) -> None:
    client = RawClient(tcp_server.port)
    try:
        send(client)
        _, detail = expect_error(client, code)
        if code == "ERR_UNSUPPORTED_VERSION":
            assert detail == 1  # the version the server speaks
        assert client.sock.recv(1) == b""  # and the server closed the connection
    finally:
        client.close()


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        ([(DATA, struct.pack(">Q", 5) + b"x")], "ERR_OFFSET_MISMATCH"),  # a gap
        ([(DATA, struct.pack(">Q", 0) + b"abcd")], "ERR_TOO_LARGE"),  # past the size
        ([(RESUME, b"abc")], "ERR_UNEXPECTED_FRAME"),  # a request mid-upload
    ],
)
def test_errors_mid_upload_close_the_connection(
    tcp_server: TcpServer, frames: list[tuple[int, bytes]], code: str
) -> None:
    client = RawClient(tcp_server.port)
    try:
        client.hello()
        client.put(3)
        for frame_type, body in frames:
            client.send(frame_type, body)
        expect_error(client, code)
        assert client.sock.recv(1) == b""
    finally:
        client.close()


def test_token_is_required_when_configured(start_tcp_server: Any, tmp_path: Path) -> None:
    server = start_tcp_server("--token", "s3cret")
    client = RawClient(server.port)
    try:
        client.send(HELLO, b"FRGT\x00\x01wrong")
        expect_error(client, "ERR_UNAUTHORIZED")
    finally:
        client.close()
    client = RawClient(server.port)
    try:
        client.hello(b"s3cret")
        client.put(1)
    finally:
        client.close()
    source = PatternStream(1000).write_to(tmp_path / "small.bin")
    with pytest.raises(TcpServerError, match="ERR_UNAUTHORIZED"):
        asyncio.run(upload_tcp(source, server.url, TransferOptions(token="nope")))
    assert asyncio.run(upload_tcp(source, server.url, TransferOptions(token="s3cret"))).verified


# memory -----------------------------------------------------------------------------------------


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def sampled_peak_kib(pid: int, done: threading.Event, peaks: list[int]) -> None:
    while not done.wait(0.05):
        peaks.append(status_kib(pid, "VmRSS"))


@pytest.mark.slow
def test_server_memory_stays_flat_moving_2_gib(start_tcp_server: Any) -> None:
    # --fsync never: syncing changes how long the disk takes, not what the server holds in
    # memory (written pages sit in the page cache, which RSS does not count), and 2 GiB of
    # fsyncs would make this test slow and at the mercy of a shared disk.
    server = start_tcp_server("--fsync", "never")
    size = 2048 * MiB  # past the ~2 GiB one sendfile call can move: the GET must loop
    pattern = PatternStream(size, seed=11)
    done, peaks = threading.Event(), [0]
    sampler = threading.Thread(target=sampled_peak_kib, args=(server.pid, done, peaks))
    sampler.start()
    client = RawClient(server.port)
    started = time.monotonic()
    try:
        client.hello()
        upload_id, _ = upload_raw(client, pattern.chunks(), size)
        received = time.monotonic()
        receiving_peak = max(status_kib(server.pid, "VmHWM"), *peaks)
        info, digest = get_raw(client, upload_id, 0, 2**64 - 1)
    finally:
        client.close()
        done.set()
        sampler.join()
    sent = time.monotonic()
    peak = max(status_kib(server.pid, "VmHWM"), *peaks)
    print(
        f"\n2 GiB up in {received - started:.1f} s (server VmHWM {receiving_peak} KiB), "
        f"down in {sent - received:.1f} s (VmHWM {peak} KiB)"
    )
    assert struct.unpack_from(">Q", info)[0] == size
    assert digest.hex() == pattern.sha256()
    assert receiving_peak < 64 * 1024, f"peak RSS {receiving_peak} KiB receiving 2 GiB"
    assert peak < 64 * 1024, f"peak RSS {peak} KiB sending 2 GiB"
