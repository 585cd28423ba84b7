"""Connections that never leave this host: no congestion control that paces its sends.

A system whose congestion control is BBR (``net.ipv4.tcp_congestion_control = bbr``) paces
every TCP send: without the ``fq`` queueing discipline, which loopback never has, the kernel
does it itself, arming a high-resolution timer per burst and sending the rest from it.
Across a wide-area path that is what BBR is for. Between two processes on one host (a
reverse proxy in front of the server, a client on the NAS itself, a fleet node and its
object store) there is no bottleneck queue to spare and the timers are pure cost: a 1 GiB
download over loopback went from about 2.1 GiB/s at 0.45 server CPU-s/GiB to 4.3-5.2 GiB/s
at 0.05-0.20, measured against the same client.

So a connection whose both ends are this host gets a congestion control that does not pace
(:data:`UNPACED`, the first the system lets us set), and every other connection keeps the
system's choice. A connection takes its congestion control from its listener, or from its
socket before ``connect``; switching an established one stops its timers only in part (the
kernel keeps the pacing it switched on), so the listeners and clients do it up front and a
download switches late only on a listener that also faces other hosts.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from asyncio.trsock import TransportSocket
from collections.abc import Iterable
from typing import Any, Final

__all__ = [
    "UNPACED",
    "is_same_host",
    "is_this_host_address",
    "socket_for",
    "unpace",
    "unpace_listeners",
]

# Congestion controls that pace their sends (all of BBR's versions are named so).
_PACING_PREFIX: Final = b"bbr"
# Tried in order; reno is always built into the kernel, cubic is its default.
UNPACED: Final = (b"cubic", b"reno")
_NAME_LENGTH: Final = 16  # TCP_CA_NAME_MAX


def is_this_host_address(host: str) -> bool:
    """Whether an address (not a name) is a loopback one: only this host answers there."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


Socket = socket.socket | TransportSocket
# (family, type, proto, canonical name, address), as getaddrinfo answers
AddressInfo = tuple[int | socket.AddressFamily, int | socket.SocketKind, int, str, tuple[Any, ...]]


def is_same_host(sock: Socket) -> bool:
    """Whether a connected socket's peer is this host: a loopback address, or the very
    address the connection arrived at (the kernel routes that through loopback too)."""
    try:
        peer = str(sock.getpeername()[0])
        local = str(sock.getsockname()[0])
    except (OSError, IndexError, TypeError):
        return False
    return is_this_host_address(peer) or peer == local


def unpace(sock: Socket) -> bool:
    """Give a TCP socket a congestion control that does not pace, if its present one does;
    True when it now has one. Best effort: a refusal leaves the system's choice."""
    option = getattr(socket, "TCP_CONGESTION", None)
    if option is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return False
    try:
        current = sock.getsockopt(socket.IPPROTO_TCP, option, _NAME_LENGTH).rstrip(b"\0")
    except OSError:
        return False
    if not current.startswith(_PACING_PREFIX):
        return True
    for name in UNPACED:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, option, name)
            return True
    return False


def unpace_listeners(sockets: Iterable[Socket]) -> None:
    """:func:`unpace` each listening socket bound to a loopback address: only this host can
    connect to it, and its connections inherit the choice from their first packet."""
    for sock in sockets:
        with contextlib.suppress(OSError, IndexError, TypeError):
            if is_this_host_address(str(sock.getsockname()[0])):
                unpace(sock)


def socket_for(address_info: AddressInfo) -> socket.socket:
    """A socket to connect to one ``getaddrinfo`` answer, not pacing when that answer is a
    loopback address (the ``socket_factory`` of aiohttp's connector takes this)."""
    family, kind, proto, _, address = address_info
    sock = socket.socket(family, kind, proto)
    if kind == socket.SOCK_STREAM and is_this_host_address(str(address[0])):
        unpace(sock)
    return sock
