"""Sending a file range from a sendfile thread: exact bytes, frame headers, a file shorter
than its record, the event-loop fallback, and a send that must stop (cancelled, or its
transport closed under it while the reader stalls). Real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl as _ssl
import struct
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from freight import same_host
from freight.server import file_sender
from freight.server.file_sender import send_file

MiB = 1024 * 1024
HEADER = struct.Struct(">QQ")

Sender = Callable[[asyncio.Transport], Awaitable[int]]


def header(offset: int, length: int) -> bytes:
    return HEADER.pack(offset, length)


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    path = tmp_path / "data.bin"
    path.write_bytes(os.urandom(9 * MiB + 123))
    return path


@pytest.fixture(params=["thread", "event loop"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "event loop":
        monkeypatch.setattr(file_sender, "MAX_THREADS", 0)  # every thread busy
    return str(request.param)


class Served:
    def __init__(self) -> None:
        self.result: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.task: asyncio.Task[int] | None = None
        self.transport: asyncio.Transport | None = None


async def serve(
    send: Sender, ssl: _ssl.SSLContext | None = None
) -> AsyncIterator[tuple[int, Served]]:
    served = Served()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        transport = writer.transport
        assert isinstance(transport, asyncio.Transport)
        served.transport = transport
        served.task = asyncio.current_task()  # type: ignore[assignment]
        try:
            served.result.set_result(await send(transport))
        except asyncio.CancelledError:
            served.result.cancel()
            raise
        except Exception as exc:
            served.result.set_exception(exc)
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ssl)
    async with server:
        yield server.sockets[0].getsockname()[1], served


def read_all(port: int, *, rcvbuf: int = 0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        parts = []
        while piece := sock.recv(MiB):
            parts.append(piece)
    return b"".join(parts)


def sendfile_threads() -> int:
    """The sendfile threads still running, a moment after their last send was answered
    (a thread settles its send just before it returns)."""
    deadline = time.monotonic() + 2
    while (running := _running_threads()) and time.monotonic() < deadline:
        time.sleep(0.01)
    return running


def _running_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "freight-sendfile")


async def test_a_range_arrives_exactly(data_file: Path, mode: str) -> None:
    data = data_file.read_bytes()
    with data_file.open("rb") as file:

        async def send(transport: asyncio.Transport) -> int:
            return await send_file(transport, file, 1001, 7 * MiB)

        async for port, served in serve(send):
            got = await asyncio.to_thread(read_all, port)
            assert await served.result == 7 * MiB
    assert got == data[1001 : 1001 + 7 * MiB]
    assert sendfile_threads() == 0


async def test_frames_carry_a_header_each(data_file: Path, mode: str) -> None:
    data = data_file.read_bytes()
    offset, count, frame = 5, len(data) - 5, 4 * MiB
    with data_file.open("rb") as file:

        async def send(transport: asyncio.Transport) -> int:
            return await send_file(transport, file, offset, count, frame=frame, header=header)

        async for port, served in serve(send):
            got = await asyncio.to_thread(read_all, port)
            assert await served.result == count
    position, at = offset, 0
    while position < offset + count:
        frame_offset, length = HEADER.unpack_from(got, at)
        assert (frame_offset, length) == (position, min(frame, offset + count - position))
        assert got[at + HEADER.size : at + HEADER.size + length] == data[position:][:length]
        at += HEADER.size + length
        position += length
    assert at == len(got)


async def test_a_file_shorter_than_its_record_sends_what_it_has(data_file: Path, mode: str) -> None:
    size = data_file.stat().st_size
    with data_file.open("rb") as file:

        async def send(transport: asyncio.Transport) -> int:
            return await send_file(transport, file, size - 100, 1000)

        async for port, served in serve(send):
            got = await asyncio.to_thread(read_all, port)
            assert await served.result == 100
    assert len(got) == 100


async def test_over_tls_the_bytes_go_through_the_tls_transport(
    data_file: Path, tls_files: Any
) -> None:
    """The raw socket under a TLS transport must never see the file's bytes."""
    server_tls = _ssl.create_default_context(_ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(tls_files.cert, tls_files.key)
    client_tls = _ssl.create_default_context(cafile=str(tls_files.ca))
    client_tls.check_hostname = False
    data = data_file.read_bytes()

    def read_tls(port: int) -> bytes:
        raw = socket.create_connection(("127.0.0.1", port), timeout=20)
        with client_tls.wrap_socket(raw) as sock:
            parts = []
            try:
                while piece := sock.recv(MiB):
                    parts.append(piece)
            except (_ssl.SSLEOFError, ConnectionError):
                pass
        return b"".join(parts)

    with data_file.open("rb") as file:

        async def send(transport: asyncio.Transport) -> int:
            return await send_file(transport, file, 3, 2 * MiB)

        async for port, served in serve(send, server_tls):
            got = await asyncio.to_thread(read_tls, port)
            assert await served.result == 2 * MiB
    assert got == data[3 : 3 + 2 * MiB]


async def stalled_send(
    data_file: Path, stop: Callable[[Served], None]
) -> tuple[BaseException | None, float]:
    """A 64 MiB send to a reader that reads nothing; ``stop`` ends it; returns what the
    send raised and how long it took to end."""
    big = data_file.with_name("big.bin")
    with big.open("wb") as out:
        out.truncate(64 * MiB)
    with big.open("rb") as file:

        async def send(transport: asyncio.Transport) -> int:
            return await send_file(transport, file, 0, 64 * MiB)

        async for port, served in serve(send):
            reader = socket.create_connection(("127.0.0.1", port))
            with reader:
                reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                await asyncio.sleep(0.5)  # the socket buffers are full by now
                assert not served.result.done()
                started = time.monotonic()
                stop(served)
                try:
                    await asyncio.wait_for(asyncio.shield(served.result), 5)
                    error: BaseException | None = None
                except BaseException as exc:
                    error = exc
                took = time.monotonic() - started
    return error, took


async def test_a_cancelled_send_stops_its_thread(data_file: Path) -> None:
    def cancel(served: Served) -> None:
        assert served.task is not None
        served.task.cancel()

    error, took = await stalled_send(data_file, cancel)
    assert isinstance(error, asyncio.CancelledError)
    assert took < 2.0
    assert sendfile_threads() == 0


async def test_a_transport_closed_under_a_send_ends_it(data_file: Path) -> None:
    def abort(served: Served) -> None:
        assert served.transport is not None
        served.transport.abort()

    error, took = await stalled_send(data_file, abort)
    assert isinstance(error, ConnectionError)
    assert took < 2.0
    assert sendfile_threads() == 0


async def test_a_send_to_a_fast_reader_stops_soon_when_cancelled(tmp_path: Path) -> None:
    """Stopping is noticed between sendfile calls too, not only when the socket is full: a
    cancelled download (a shutdown) does not go on to the end of a long range."""
    size = 8 * 1024 * MiB
    big = tmp_path / "sparse.bin"
    with big.open("wb") as out:
        out.truncate(size)  # holes: read as zeros, no disk
    received = 0

    def read_fast(port: int) -> None:
        nonlocal received
        buffer = bytearray(MiB)
        with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
            try:
                while got := sock.recv_into(buffer):
                    received += got
            except OSError:
                pass

    with big.open("rb") as file:

        async def send(transport: asyncio.Transport) -> int:
            return await send_file(transport, file, 0, size)

        async for port, served in serve(send):
            reading = asyncio.ensure_future(asyncio.to_thread(read_fast, port))
            while served.task is None:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.1)
            served.task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(served.result), 5)
            await asyncio.wait_for(reading, 10)
    assert 0 < received < 1536 * MiB  # one 2 GiB call was the least before
    assert sendfile_threads() == 0


async def send_buffer_around(data_file: Path, count: int) -> tuple[int, int]:
    """The server socket's ``SO_SNDBUF`` before and after a send of ``count`` bytes."""
    sizes: list[int] = []
    with data_file.open("rb") as file:

        async def send(transport: asyncio.Transport) -> int:
            sock = transport.get_extra_info("socket")
            sizes.append(sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF))
            sent = await send_file(transport, file, 0, count)
            sizes.append(sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF))
            return sent

        async for port, served in serve(send):
            got = await asyncio.to_thread(read_all, port)
            assert await served.result == count == len(got)
    return sizes[0], sizes[1]


def _widening_allowed() -> int:
    """What a long range's send buffer is widened to here, or 0 where the system caps it
    below autotuning's own largest size."""
    limits = file_sender._send_buffer_limits()
    return 2 * file_sender.send_buffer_request(0, *limits)


async def test_a_long_range_gets_a_send_buffer_beyond_autotuning(data_file: Path) -> None:
    """Over loopback a buffer larger than the peer's window moves most of the network
    stack's work out of the sending server (about 0.3 to 0.1 CPU-s/GiB)."""
    widened = _widening_allowed()
    if not widened:
        pytest.skip("net.core.wmem_max does not allow more than autotuning gives")
    before, after = await send_buffer_around(data_file, file_sender.SEND_BUFFER)
    assert after == widened > before


async def test_a_short_range_keeps_the_autotuned_send_buffer(data_file: Path) -> None:
    before, after = await send_buffer_around(data_file, 2 * MiB)
    autotune_max = file_sender._send_buffer_limits()[1] or 0
    assert after <= max(before, autotune_max)


@pytest.mark.parametrize(
    ("current", "wmem_max", "autotune_max", "asked"),
    [
        (16384, 4 * MiB, 4 * MiB, 4 * MiB),  # granted 8 MiB, beyond autotuning's 4
        (16384, 16 * MiB, 4 * MiB, file_sender.SEND_BUFFER),  # never more than asked for
        (16384, 212992, 4 * MiB, 0),  # the default cap: asking would shrink the buffer
        (16384, 2 * MiB, 4 * MiB, 0),  # granted 4 MiB: no more than autotuning reaches
        (16 * MiB, 8 * MiB, 4 * MiB, 0),  # already larger
        (16384, None, 4 * MiB, 0),  # unknown limits: leave the kernel to it
        (16384, 4 * MiB, None, 0),
    ],
)
def test_the_send_buffer_is_only_ever_widened(
    current: int, wmem_max: int | None, autotune_max: int | None, asked: int
) -> None:
    assert file_sender.send_buffer_request(current, wmem_max, autotune_max) == asked


async def test_a_long_range_to_this_host_stops_pacing(data_file: Path) -> None:
    """A listener facing other hosts too hands a same-host peer a pacing connection (where
    the system's choice is BBR): its long downloads switch it (freight.same_host)."""
    available = Path("/proc/sys/net/ipv4/tcp_available_congestion_control").read_text()
    names: list[bytes] = []
    with data_file.open("rb") as file:

        async def send(transport: asyncio.Transport) -> int:
            sock = transport.get_extra_info("socket")
            if "bbr" in available.split():
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, b"bbr")
            names.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16))
            sent = await send_file(transport, file, 0, file_sender.SEND_BUFFER)
            names.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16))
            return sent

        async for port, served in serve(send):
            await asyncio.to_thread(read_all, port)
            assert await served.result == file_sender.SEND_BUFFER
    before, after = (name.rstrip(b"\0") for name in names)
    assert after in same_host.UNPACED if before == b"bbr" else after == before
