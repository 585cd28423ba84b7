"""What the fleet tests share: a balancer stand-in, a resuming tus / IETF client on raw
sockets that records every offset the server acknowledged, and small waits.

The balancer is one proxy URL whose upstream is switched from node to node while its links
are cut, as a load balancer does when a node goes away; it counts every byte the client
sent through it (headers included), so a test can tell how much was sent twice.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from tests.chaos.proxy import LinkProxy
from tests.integration.helpers import PatternStream

__all__ = ["Background", "Balancer", "LinkLost", "RawReply", "ResumingClient", "wait_for"]

PARTIAL = "application/partial-upload"
OFFSET_STREAM = "application/offset+octet-stream"


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``check`` every 5 ms; returns the seconds it took, fails after ``timeout``."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.005)
    return time.monotonic() - started


class Balancer:
    """One URL in front of the fleet; :meth:`switch` moves it to another node."""

    def __init__(self, upstream_port: int, rate: int | None = None) -> None:
        self.proxy = LinkProxy(upstream_port, rate=rate).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.proxy.port}"

    @property
    def port(self) -> int:
        return self.proxy.port

    @property
    def sent(self) -> int:
        """Client bytes forwarded to a node so far, over every connection."""
        return self.proxy.upstream_bytes

    def switch(self, upstream_port: int) -> int:
        """Send new connections to ``upstream_port`` and cut the open ones; returns ``sent``."""
        self.proxy.upstream_port = upstream_port
        self.proxy.cut_all()
        return self.sent

    def stop(self) -> None:
        self.proxy.stop()


class Background:
    """A coroutine (or a function) run to its end in a thread while the test acts."""

    def __init__(self, work: Callable[[], Coroutine[Any, Any, Any]] | Callable[[], Any]) -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(work,), daemon=True)
        self._thread.start()

    def _run(self, work: Callable[[], Any]) -> None:
        try:
            outcome = work()
            self.result = asyncio.run(outcome) if asyncio.iscoroutine(outcome) else outcome
        except BaseException as exc:  # reported by join()
            self.error = exc

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def join(self, timeout: float) -> Any:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"still running after {timeout} s"
        if self.error is not None:
            raise self.error
        return self.result


@dataclass
class RawReply:
    status: int
    headers: dict[str, str]
    body: bytes = b""


class LinkLost(Exception):
    """The connection ended before a whole answer came back."""


def _read_reply(stream: Any, method: str) -> RawReply:
    while True:
        line = stream.readline()
        if not line:
            raise LinkLost("connection closed before an answer")
        status = int(line.split()[1])
        headers: dict[str, str] = {}
        while (line := stream.readline().decode("latin-1").rstrip("\r\n")) != "":
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if status >= 200:  # IETF servers may answer 104 first
            break
    no_body = method == "HEAD" or status in (204, 304)
    body = b"" if no_body else stream.read(int(headers.get("content-length", "0")))
    return RawReply(status, headers, body)


@dataclass
class ResumingClient:
    """A resumable uploader written from the specs, on raw sockets: tus 1.0 or IETF (interop 8).

    It asks the server for its offset, sends from there in PATCHes of at most ``piece``
    bytes, and on any failure asks again, until the upload is complete or ``deadline``
    seconds have passed. Every acknowledged offset is kept with the time it came back.
    """

    base_url: str
    source: PatternStream
    ietf: bool = False
    piece: int | None = None
    deadline: float = 60.0
    path: str = ""
    acks: list[tuple[float, int]] = field(default_factory=list)
    heads: list[tuple[float, int]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    final: RawReply | None = None

    def _protocol_headers(self) -> dict[str, str]:
        if self.ietf:
            return {"Upload-Draft-Interop-Version": "8"}
        return {"Tus-Resumable": "1.0.0"}

    def _send(
        self, method: str, path: str, headers: dict[str, str], start: int = 0, end: int = 0
    ) -> RawReply:
        parts = urlsplit(self.base_url)
        assert parts.hostname is not None and parts.port is not None
        head = [f"{method} {path} HTTP/1.1", f"Host: {parts.hostname}:{parts.port}"]
        head += ["Connection: close", f"Content-Length: {end - start}"]
        head += [
            f"{name}: {value}" for name, value in {**self._protocol_headers(), **headers}.items()
        ]
        with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
            sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
            for chunk in self.source.chunks(start, end):
                sock.sendall(chunk)
            return _read_reply(sock.makefile("rb"), method)

    def create(self) -> str:
        headers = {"Upload-Length": str(self.source.size)}
        if self.ietf:
            headers["Upload-Complete"] = "?0"
        reply = self._send("POST", "/files/", headers)
        assert reply.status == 201, reply
        self.path = urlsplit(reply.headers["location"]).path
        return self.path

    def offset(self) -> int:
        reply = self._send("HEAD", self.path, {})
        assert reply.status in (200, 204), reply
        offset = int(reply.headers["upload-offset"])
        self.heads.append((time.monotonic(), offset))
        return offset

    def patch(self, offset: int) -> int:
        end = self.source.size if self.piece is None else min(self.source.size, offset + self.piece)
        headers = {"Upload-Offset": str(offset)}
        if self.ietf:
            headers["Content-Type"] = PARTIAL
            headers["Upload-Complete"] = "?1" if end == self.source.size else "?0"
        else:
            headers["Content-Type"] = OFFSET_STREAM
        reply = self._send("PATCH", self.path, headers, offset, end)
        if reply.status != 204:
            raise LinkLost(f"PATCH answered {reply.status}: {reply.body[:200]!r}")
        acked = int(reply.headers["upload-offset"])
        self.acks.append((time.monotonic(), acked))
        if acked == self.source.size:
            self.final = reply
        return acked

    def run(self) -> RawReply:
        """Send until complete; the final PATCH answer (with ``Repr-Digest``)."""
        if not self.path:
            self.create()
        give_up = time.monotonic() + self.deadline
        while self.final is None:
            try:
                offset = self.offset()
                self.patch(offset)
            except (OSError, LinkLost, AssertionError, ValueError, KeyError) as exc:
                self.failures.append(f"{time.monotonic():.3f} {exc!r}")
                if time.monotonic() > give_up:
                    raise AssertionError(f"gave up: {self.failures}") from exc
                time.sleep(0.1)
        return self.final
