"""kill -9 of the node an upload is going through: the client goes on through another node
within seconds, from an offset no lower than the last one the dead node acknowledged."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ServerProcess
from tests.fleet.conftest import PART_SIZE, Fleet, MiB
from tests.fleet.fleet_support import Background, Balancer, ResumingClient, wait_for
from tests.fleet.test_cut_over import FRAMING, library_upload, tcp_port
from tests.integration.helpers import PatternStream, download, request

SIZE = 20 * MiB + 77
PIECE = 3 * MiB + 7  # each PATCH acknowledged on its own, off the part boundaries
RATE = 8 * MiB
RESUME_WITHIN = 10.0


@pytest.mark.parametrize("ietf", [False, True], ids=["tus", "ietf"])
def test_a_killed_node_loses_no_acknowledged_byte_and_another_takes_over(
    fleet: Fleet, ietf: bool
) -> None:
    a, b = fleet.start_node(), fleet.start_node()
    source = PatternStream(SIZE, seed=21)
    balancer = Balancer(a.port, rate=RATE)
    client = ResumingClient(balancer.url, source, ietf=ietf, piece=PIECE, deadline=60)
    try:
        running = Background(client.run)
        # Mid-PATCH: four pieces acknowledged, the fifth on its way.
        wait_for(lambda: len(client.acks) >= 4, 30, "four PATCHes acknowledged by node A")
        wait_for(lambda: balancer.sent >= 4 * PIECE + MiB, 10, "a fifth PATCH under way")
        a.kill()
        killed = time.monotonic()
        balancer.switch(b.port)  # the balancer's health check notices
        acked_by_a = max((offset for at, offset in client.acks if at < killed), default=0)
        final = running.join(60)
    finally:
        balancer.stop()
    heads_after = [offset for at, offset in client.heads if at > killed]
    acks_after = [at for at, _ in client.acks if at > killed]
    assert heads_after and acks_after, "no request answered after the kill"
    delay = acks_after[0] - killed
    print(f"\nacked by A {acked_by_a}, B's offset {heads_after[0]}, ack after {delay:.2f} s")
    assert acked_by_a >= 4 * PIECE and acked_by_a < SIZE
    assert heads_after[0] >= acked_by_a, "node B lost bytes node A acknowledged"
    assert delay < RESUME_WITHIN, f"the client went on only {delay:.1f} s after the kill"
    assert client.failures, "the kill interrupted nothing"
    offsets = [offset for _, offset in client.acks]
    assert offsets == sorted(offsets) and offsets[-1] == SIZE
    assert final.headers.get("repr-digest") is not None
    fetched = download(b.url + client.path)
    assert (fetched.size, fetched.sha256) == (SIZE, source.sha256())


def uploads_on(node: ServerProcess) -> list[dict[str, Any]]:
    listing = request("GET", f"{node.url}/api/uploads").json()
    assert isinstance(listing, dict)
    return list(listing["uploads"])


def recorded(node: ServerProcess) -> int:
    """The bytes a node reports received, over every upload it lists."""
    return sum(int(upload["received_bytes"]) for upload in uploads_on(node))


@pytest.mark.parametrize("protocol", ["tus", "ws", "tcp", "chunks"])
def test_freight_clients_go_on_through_another_node_after_a_kill(
    fleet: Fleet, tmp_path: Path, protocol: str
) -> None:
    """The library's own retry, every protocol: bytes flow to node B within seconds of the
    kill; what node B could see recorded before the kill is still there after it, and is
    not sent again (but for a chunk whose answer the kill lost: it goes again whole)."""
    tcp = ["--tcp-port", "0"] if protocol == "tcp" else []
    a, b = fleet.start_node(*tcp), fleet.start_node(*tcp)
    port_a, port_b = (tcp_port(a), tcp_port(b)) if tcp else (a.port, b.port)
    source = PatternStream(SIZE, seed=22)
    path = source.write_to(tmp_path / "killed.bin")
    # Two chunks in flight, so some are recorded while others are sent; together they get
    # the rate the other protocols' one stream gets.
    parallel = 2 if protocol == "chunks" else 1
    balancer = Balancer(port_a, rate=RATE // parallel)
    url = f"tcp://127.0.0.1:{balancer.port}" if tcp else balancer.url
    try:
        upload = library_upload(protocol, path, url, tmp_path / "state", parallel)
        client = Background(upload)
        wait_for(lambda: recorded(b) >= 2 * PART_SIZE, 30, "two parts recorded, seen from B")
        seen = recorded(b)
        a.kill()
        at_kill = balancer.switch(port_b)
        kept = recorded(b)
        delay = wait_for(lambda: balancer.sent > at_kill + 256 * 1024, RESUME_WITHIN, "node B")
        (state,) = uploads_on(b)
        result = client.join(60)
    finally:
        balancer.stop()
    again = balancer.sent - SIZE
    print(f"\n{protocol}: bytes to B {delay:.2f} s after the kill; {seen} recorded; again {again}")
    assert seen < SIZE and at_kill < SIZE
    assert kept >= seen, "recorded bytes lost with the node"
    assert result.sha256 == source.sha256() and result.verified
    # Resumed at or past what was recorded: bytes A had not recorded went twice, and for
    # the chunk API each chunk in flight at most once more.
    answers_lost = parallel * int(state["chunk_size"]) if protocol == "chunks" else 0
    assert balancer.sent <= at_kill + (SIZE - seen) + answers_lost + FRAMING
    fetched = download(b.url + "/files/" + result.url.rstrip("/").rsplit("/", 1)[1])
    assert (fetched.size, fetched.sha256) == (SIZE, source.sha256())
