"""kill -9 of the node an upload is going through: the client goes on through another node
within seconds, from an offset no lower than the last one the dead node acknowledged."""

from __future__ import annotations

import time

import pytest

from tests.fleet.conftest import Fleet, MiB
from tests.fleet.fleet_support import Background, Balancer, ResumingClient, wait_for
from tests.integration.helpers import PatternStream, download

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
