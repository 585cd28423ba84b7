"""Same-host connections get a congestion control that does not pace; others keep the
system's. Real sockets on 127.0.0.1; BBR stands for the pacing kind where the kernel has it,
and where it has not, the assertions are that nothing is changed."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from freight import same_host

AVAILABLE = Path("/proc/sys/net/ipv4/tcp_available_congestion_control")
DEFAULT = Path("/proc/sys/net/ipv4/tcp_congestion_control")
HAS_BBR = "bbr" in AVAILABLE.read_text().split()
NON_PACING = {name.decode() for name in same_host.UNPACED}


def congestion(sock: socket.socket | asyncio.trsock.TransportSocket) -> str:
    raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16)
    return raw.rstrip(b"\0").decode()


def set_congestion(sock: socket.socket | asyncio.trsock.TransportSocket, name: str) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, name.encode())


def pacing_or_default() -> str:
    """The congestion control a test gives a socket before unpacing it: BBR where there is
    one (as root any available one may be set), else the system's."""
    return "bbr" if HAS_BBR else DEFAULT.read_text().strip()


@pytest.mark.parametrize(
    ("host", "this_host"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("10.0.0.7", False),
        ("::ffff:192.168.1.2", False),
        ("fe80::1%lo", False),
        ("localhost", False),  # a name, not an address: nothing is assumed of it
        ("", False),
    ],
)
def test_only_loopback_addresses_are_this_host(host: str, this_host: bool) -> None:
    assert same_host.is_this_host_address(host) is this_host


def test_a_pacing_socket_is_given_one_that_does_not_pace() -> None:
    with socket.socket() as sock:
        set_congestion(sock, pacing_or_default())
        before = congestion(sock)
        assert same_host.unpace(sock)
        after = congestion(sock)
    if before.startswith("bbr"):
        assert after in NON_PACING
    else:
        assert after == before


def test_a_socket_that_does_not_pace_keeps_its_choice() -> None:
    with socket.socket() as sock:
        set_congestion(sock, "reno")
        assert same_host.unpace(sock)
        assert congestion(sock) == "reno"


def test_a_unix_socket_is_left_alone() -> None:
    left, right = socket.socketpair()
    with left, right:
        assert not same_host.unpace(left)
        assert not same_host.is_same_host(left)


async def accepted_congestion(host: str, bind: str) -> tuple[str, bool]:
    """Listen on ``bind`` (set to pace first), unpace the listeners, connect from ``host``:
    the accepted connection's congestion control, and whether it is same-host."""
    seen: asyncio.Future[tuple[str, bool]] = asyncio.get_running_loop().create_future()

    async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        seen.set_result((congestion(sock), same_host.is_same_host(sock)))
        writer.close()

    server = await asyncio.start_server(accept, bind, 0)
    async with server:
        for listener in server.sockets:
            set_congestion(listener, pacing_or_default())
        same_host.unpace_listeners(server.sockets)
        port = server.sockets[0].getsockname()[1]
        _, writer = await asyncio.open_connection(host, port)
        result = await asyncio.wait_for(seen, 10)
        writer.close()
    return result


async def test_a_loopback_listener_hands_its_connections_a_choice_that_does_not_pace() -> None:
    name, same = await accepted_congestion("127.0.0.1", "127.0.0.1")
    assert same
    assert name in NON_PACING if HAS_BBR else name == pacing_or_default()


async def test_a_listener_facing_other_hosts_keeps_the_systems_choice() -> None:
    name, same = await accepted_congestion("127.0.0.1", "0.0.0.0")
    assert same  # still this host's connection: a long download switches it itself
    assert name == pacing_or_default()


def test_a_socket_to_a_loopback_address_does_not_pace_and_others_keep_the_default() -> None:
    default = DEFAULT.read_text().strip()
    stream = (socket.AF_INET, socket.SOCK_STREAM, 6, "")
    with same_host.socket_for((*stream, ("127.0.0.1", 9))) as local:
        local_name = congestion(local)
    with same_host.socket_for((*stream, ("192.0.2.1", 9))) as remote:
        remote_name = congestion(remote)
    assert remote_name == default
    assert local_name in NON_PACING if default.startswith("bbr") else local_name == default
