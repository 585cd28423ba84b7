"""Several writers on one upload through several nodes: two clients at once (the later
takes over, the earlier is cut off), and the chunks of one upload spread over three nodes."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

from tests.fleet.conftest import PART_SIZE, Fleet, MiB
from tests.fleet.fleet_support import Background, Balancer, LinkLost, ResumingClient, wait_for
from tests.integration.helpers import PatternStream, download, request

SIZE = 16 * MiB + 999
SLOW = 4 * MiB  # client bytes per second of the earlier writer


def test_the_later_of_two_writers_on_two_nodes_takes_over_and_the_file_is_intact(
    fleet: Fleet,
) -> None:
    a, b = fleet.start_node(), fleet.start_node()
    source = PatternStream(SIZE, seed=31)
    to_a = Balancer(a.port, rate=SLOW)
    try:
        earlier = ResumingClient(to_a.url, source)
        earlier.create()
        first = Background(lambda: earlier.patch(0))
        wait_for(lambda: to_a.sent >= 6 * MiB, 20, "the earlier writer is sending to node A")
        later = ResumingClient(b.url, source, deadline=40)
        later.path = earlier.path
        started = time.monotonic()
        final = later.run()
        try:
            first.join(15)
            outcome = "the earlier writer finished"
        except (OSError, LinkLost) as exc:
            outcome = repr(exc)
        ended = time.monotonic() - started
    finally:
        to_a.stop()
    print(f"\nearlier writer: {outcome}; sent {to_a.sent} to A; later done in {ended:.1f} s")
    assert earlier.final is None and not earlier.acks, "both writers finished the upload"
    assert to_a.sent < SIZE, "the earlier writer was not cut off"
    assert later.heads[0][1] < SIZE
    assert final.headers.get("upload-offset") == str(SIZE)
    for node in (a, b):
        fetched = download(node.url + earlier.path)
        assert (fetched.size, fetched.sha256) == (SIZE, source.sha256())


def test_the_chunks_of_one_upload_sent_to_three_nodes_make_the_file(fleet: Fleet) -> None:
    nodes = [fleet.start_node() for _ in range(3)]
    source = PatternStream(5 * PART_SIZE + 12345, seed=32)
    made = request(
        "POST",
        f"{nodes[0].url}/api/uploads",
        {"Content-Type": "application/json"},
        json.dumps({"name": "spread.bin", "size": source.size, "chunk_size": PART_SIZE}).encode(),
    )
    assert made.status == 201, made.body
    created = made.json()
    assert isinstance(created, dict) and created["chunk_size"] == PART_SIZE
    upload = f"/api/uploads/{created['id']}"
    count = int(created["chunk_count"])

    def put(n: int) -> int:
        start, end = n * PART_SIZE, min(source.size, (n + 1) * PART_SIZE)
        body = b"".join(source.chunks(start, end))
        node = nodes[n % 3]
        headers = {"Content-Type": "application/octet-stream"}
        return request("PUT", f"{node.url}{upload}/chunks/{n}", headers, body).status

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(put, range(count))) == [200] * count
    for node in nodes:  # every node sees every chunk, whichever took it
        state = request("GET", node.url + upload).json()
        assert isinstance(state, dict)
        assert (state["missing"], state["received_bytes"]) == ([], source.size)
    headers = {"Content-Type": "application/json"}
    payload = json.dumps({"sha256": source.sha256()}).encode()
    done = request("POST", f"{nodes[1].url}{upload}/complete", headers, payload)
    assert done.status == 200, done.body
    answer = done.json()
    assert isinstance(answer, dict) and answer["sha256"] == source.sha256()
    fetched = download(nodes[2].url + answer["url"])
    assert (fetched.size, fetched.sha256) == (source.size, source.sha256())
