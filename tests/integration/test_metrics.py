"""``/metrics`` of a real ``freight serve`` after uploads over tus, WebSocket and TCP, a
download, health checks and requests for paths that do not exist."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from .helpers import MiB, PatternStream, create_upload, download, request
from .shutdown_peers import TusPeer, finish_tcp, finish_tus, finish_ws
from .test_shutdown import tcp_address

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    reply = request("GET", f"{url}/metrics")
    assert reply.status == 200
    samples: Samples = {}
    for family in text_string_to_metric_families(reply.body.decode()):
        for sample in family.samples:
            samples[sample.name, frozenset(sample.labels.items())] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_metrics_after_a_few_transfers(server_factory: Any, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = server_factory(data_dir=data_dir, args=["--tcp-port", "0"]).start()
    size = 3 * MiB
    by_tus, by_ws, by_tcp = (PatternStream(size, seed=n) for n in (21, 22, 23))
    tus_url = create_upload(server.url, size)
    finish_tus(tus_url, by_tus)
    ws_url = create_upload(server.url, size)  # created over tus, sent over WebSocket
    finish_ws(server.url, ws_url.rsplit("/", 1)[1], by_ws)
    tcp_url = create_upload(server.url, size)
    finish_tcp(*tcp_address(server), tcp_url.rsplit("/", 1)[1], by_tcp)
    assert download(tus_url).sha256 == by_tus.sha256()
    for _ in range(3):
        assert request("GET", f"{server.url}/health").status == 200
    for n in range(5):
        assert request("GET", f"{server.url}/no/such/path/{n}").status == 404
    create_upload(server.url, 10 * MiB)  # idle: nobody writes to it
    slow = PatternStream(64 * MiB, seed=24)
    writing = TusPeer(create_upload(server.url, slow.size), slow, 1 * MiB)
    writing.start()
    writing.wait_sent(MiB)  # active: its writer is open
    time.sleep(0.3)

    samples = scrape(server.url)

    def requests(route: str, method: str, status: str) -> float:
        return value(
            samples, "freight_http_requests_total", route=route, method=method, status=status
        )

    assert requests("/health", "GET", "200") == 3
    assert requests("unmatched", "GET", "404") == 5
    assert requests("/files/", "POST", "201") == 5
    assert requests("/files/{upload_id}", "PATCH", "204") == 1
    assert requests("/files/{upload_id}", "GET", "200") == 1
    assert requests("/api/ws", "GET", "101") == 1
    assert not any("/no/such" in str(labels) for _, labels in samples)  # never the raw path
    histogram = {"route": "/health", "method": "GET", "status": "200"}
    assert value(samples, "freight_http_request_duration_seconds_count", **histogram) == 3
    assert 0 < value(samples, "freight_http_request_duration_seconds_sum", **histogram) < 3
    inf = {**histogram, "le": "+Inf"}
    assert value(samples, "freight_http_request_duration_seconds_bucket", **inf) == 3

    received = "freight_bytes_received_total"
    # And what the slow PATCH sent so far, as far as it was counted (a spliced body is
    # counted every 4 MiB).
    assert size <= value(samples, received, protocol="tus") <= size + writing.sent
    assert value(samples, received, protocol="ws") == size
    assert value(samples, received, protocol="tcp") == size
    assert value(samples, "freight_bytes_sent_total", protocol="download") == size

    assert value(samples, "freight_unfinished_uploads", state="active") == 1
    assert value(samples, "freight_unfinished_uploads", state="idle") == 1
    assert value(samples, "freight_uploads_in_progress") == 2
    free = shutil.disk_usage(data_dir).free
    assert abs(value(samples, "freight_disk_free_bytes") - free) < max(free // 10, 256 * MiB)
    assert value(samples, "freight_disk_reserve_bytes") == 64 * MiB
    assert value(samples, "process_resident_memory_bytes") > 10 * MiB
    assert value(samples, "process_open_fds") > 0
    assert value(samples, "freight_uploads_created_total") == 5
    assert value(samples, "freight_uploads_finished_total") == 3
