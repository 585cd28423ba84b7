"""Every upload protocol, through one balancer URL: node A's links are cut midway and the
balancer moves to node B; the client's own retry carries on there. The file arrives intact
and at most one part (plus a little protocol framing) is sent twice."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from freight.client import ResumeStore, RetryPolicy, UploadResult
from freight.client.options import TransferOptions
from freight.client.protocols import UPLOADERS
from tests.conftest import ServerProcess
from tests.fleet.conftest import PART_SIZE, Fleet, MiB
from tests.fleet.fleet_support import Background, Balancer, ResumingClient, wait_for
from tests.integration.helpers import PatternStream, download

SIZE = 20 * MiB + 321
# Off the part boundaries, far enough past one that the node has recorded that part by then
# (it records at least once a part): what is sent again is the bytes since, at most.
CUT_AT = 2 * PART_SIZE + 7 * MiB // 2
# Room for what is not file bytes: request heads, WebSocket and TCP frame headers.
FRAMING = 256 * 1024
RATE = 6 * MiB  # per link, so the cut lands while bytes flow
PATIENT = RetryPolicy(attempts=20, initial_delay=0.1, max_delay=0.5)
TCP_LINE = re.compile(r"tcp listening on tcp://[^\s]+:(\d+)")


def tcp_port(node: ServerProcess) -> int:
    def found() -> bool:
        return any(TCP_LINE.search(line) for line in list(node.output_tail))

    wait_for(found, 20, "the node reports its TCP port")
    match = next(m for line in list(node.output_tail) if (m := TCP_LINE.search(line)))
    return int(match.group(1))


def library_upload(
    protocol: str, path: Path, url: str, state: Path, parallel: int = 4
) -> Callable[[], Coroutine[Any, Any, UploadResult]]:
    def start() -> Coroutine[Any, Any, UploadResult]:
        return UPLOADERS[protocol](
            path,
            url,
            TransferOptions(retry=PATIENT, resume_store=ResumeStore(state)),
            parallel=parallel,
        )

    return start


PROTOCOLS = [
    pytest.param("tus", 1, id="tus"),
    pytest.param("ietf", 1, id="ietf"),
    pytest.param("ws", 1, id="ws"),
    pytest.param("tcp", 1, id="tcp"),
    # Four chunks (each a part) are in flight at the cut: each keeps what reached node A,
    # and node B takes the rest only (the client asks before it resends, and waits for
    # 100 Continue while node A may still be recording), so the bound is one part in all.
    pytest.param("chunks", 1, id="chunks-one-part"),
]


@pytest.mark.parametrize(("protocol", "parts_again"), PROTOCOLS)
def test_a_cut_upload_resumes_through_another_node_sending_at_most_one_part_twice(
    fleet: Fleet, tmp_path: Path, protocol: str, parts_again: int
) -> None:
    tcp = ["--tcp-port", "0"] if protocol == "tcp" else []
    a, b = fleet.start_node(*tcp), fleet.start_node(*tcp)
    port_a, port_b = (tcp_port(a), tcp_port(b)) if tcp else (a.port, b.port)
    source = PatternStream(SIZE, seed=11)
    balancer = Balancer(port_a, rate=RATE)
    try:
        if protocol == "ietf":
            raw = ResumingClient(balancer.url, source, ietf=True, deadline=60)
            client = Background(raw.run)
        else:
            path = source.write_to(tmp_path / "cut.bin")
            url = f"tcp://127.0.0.1:{balancer.port}" if tcp else balancer.url
            client = Background(library_upload(protocol, path, url, tmp_path / "state"))
        wait_for(lambda: balancer.sent >= CUT_AT, 30, "bytes sent to node A")
        at_cut = balancer.switch(port_b)
        started = time.monotonic()
        result = client.join(90)
        took = time.monotonic() - started
    finally:
        balancer.stop()
    sent = balancer.sent
    print(f"\n{protocol}: cut at {at_cut}, sent {sent}, again {sent - SIZE}, {took:.1f} s after")
    assert at_cut < SIZE, "the cut came after the upload ended"
    assert sent > at_cut, "nothing was sent to node B"
    if protocol == "ietf":
        assert raw.final is not None and raw.failures, "the cut did not interrupt the client"
        upload_path = raw.path
    else:
        assert result.sha256 == source.sha256() and result.verified
        upload_path = "/files/" + result.url.rstrip("/").rsplit("/", 1)[1]
    assert sent <= SIZE + parts_again * PART_SIZE + FRAMING, f"{sent - SIZE} bytes sent again"
    # Node C never saw a byte of it; what it serves is the whole file.
    c = fleet.start_node()
    fetched = download(c.url + upload_path)
    assert fetched.status == 200
    assert (fetched.size, fetched.sha256) == (SIZE, source.sha256())
