"""Transfers across a link that keeps dropping: the retry budget counts failures in a row
without progress, never the cuts of a transfer that moves forward each time.

Every protocol goes through :class:`FlakyLink`, which resets each connection after 1.5 MiB,
so a 16 MiB transfer needs 11 or more attempts; with a budget of 2 retries it must still
finish, and the bytes sent must stay close to the file's size.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_support import MiB, cli_env, json_output, make_file, run_cli, sha256_of
from flaky_link import FlakyLink

from freight.client import RetryPolicy, download_file, upload_file
from freight.client.options import TransferOptions
from freight.client.protocols import UPLOADERS
from freight.client.tcp import download_tcp

SIZE = 16 * MiB
CUT = 3 * MiB // 2  # over the server's 1 MiB staging buffer, which a cut loses
POLICY = RetryPolicy(attempts=2, initial_delay=0.01, max_delay=0.05)
TCP_LINE = re.compile(r"tcp listening on tcp://[^\s:]+:(\d+)")


class Servers:
    def __init__(self, server: Any) -> None:
        self.http_port = server.port
        self.url = server.url
        deadline = time.monotonic() + 20
        while not (port := _tcp_port(list(server.output_tail))):
            assert time.monotonic() < deadline, list(server.output_tail)
            time.sleep(0.02)
        self.tcp_port = port


def _tcp_port(lines: list[str]) -> int | None:
    for line in lines:
        if match := TCP_LINE.search(line):
            return int(match.group(1))
    return None


@pytest.fixture
def servers(tmp_path: Path, server_factory: Any) -> Servers:
    return Servers(server_factory(data_dir=tmp_path / "data", args=["--tcp-port", "0"]).start())


@pytest.fixture
def link() -> Iterator[Callable[..., FlakyLink]]:
    started: list[FlakyLink] = []

    def start(port: int, **behaviour: Any) -> FlakyLink:
        proxy = FlakyLink(port, **behaviour).start()
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()


@pytest.mark.parametrize("protocol", sorted(UPLOADERS))
def test_upload_survives_cuts_that_each_make_progress(
    protocol: str, servers: Servers, link: Callable[..., FlakyLink], tmp_path: Path
) -> None:
    source = tmp_path / "big.bin"
    digest = make_file(source, SIZE)
    tcp = protocol == "tcp"
    proxy = link(servers.tcp_port if tcp else servers.http_port, cut_every=CUT)
    extra: dict[str, Any] = {"parallel": 1}
    if protocol == "chunks":
        extra["requested_chunk_size"] = 256 * 1024  # chunks fit between the cuts
    result = asyncio.run(
        UPLOADERS[protocol](
            source, proxy.tcp_url if tcp else proxy.url, TransferOptions(retry=POLICY), **extra
        )
    )
    assert result.sha256 == digest
    assert proxy.stats.cuts >= 10
    # Each cut costs at most what was in flight past the durable offset.
    assert proxy.stats.forwarded["up"] < SIZE * 1.5


@pytest.mark.parametrize("protocol", ["http", "tcp"])
def test_download_survives_cuts_that_each_make_progress(
    protocol: str, servers: Servers, link: Callable[..., FlakyLink], tmp_path: Path
) -> None:
    source = tmp_path / "big.bin"
    digest = make_file(source, SIZE)
    uploaded = asyncio.run(upload_file(source, servers.url))
    file_id = uploaded.url.rstrip("/").rsplit("/", 1)[-1]
    tcp = protocol == "tcp"
    proxy = link(servers.tcp_port if tcp else servers.http_port, direction="down", cut_every=CUT)
    out = tmp_path / "copy.bin"
    if tcp:
        result = asyncio.run(
            download_tcp(f"{proxy.tcp_url}/{file_id}", out, TransferOptions(retry=POLICY))
        )
    else:
        result = asyncio.run(
            download_file(f"{proxy.url}/files/{file_id}", out, TransferOptions(retry=POLICY))
        )
    assert result.sha256 == digest == sha256_of(out)
    assert proxy.stats.cuts >= 10
    assert proxy.stats.forwarded["down"] < SIZE * 1.5


def test_cli_send_with_two_retries_survives_a_dozen_cuts(
    servers: Servers, link: Callable[..., FlakyLink], tmp_path: Path, env: dict[str, str]
) -> None:
    source = tmp_path / "big.bin"
    digest = make_file(source, SIZE)
    proxy = link(servers.tcp_port, cut_every=CUT)
    done = run_cli(
        "send", str(source), proxy.tcp_url, "--protocol", "tcp", "--retries", "2", "--json",
        env=env,
    )  # fmt: skip
    assert json_output(done)["sha256"] == digest
    assert proxy.stats.cuts >= 10


# A link that stops forwarding without closing -----------------------------------------------

STALL = 1.5  # the client's --stall-timeout in these tests
STALL_SIZE = 8 * MiB
MARGIN = 4.0  # a loaded 2-core machine; the default before was 120 s


def _stall_bound(proxy: FlakyLink) -> float:
    assert proxy.stats.stalled_at is not None, "the link never stalled"
    assert proxy.stats.stall_noticed_at is not None, "the client never gave up on the stall"
    return proxy.stats.stall_noticed_at - proxy.stats.stalled_at


@pytest.mark.parametrize("protocol", sorted(UPLOADERS))
def test_upload_resumes_after_a_stalled_link(
    protocol: str, servers: Servers, link: Callable[..., FlakyLink], tmp_path: Path
) -> None:
    from freight.client import Timeouts

    source = tmp_path / "big.bin"
    digest = make_file(source, STALL_SIZE)
    tcp = protocol == "tcp"
    proxy = link(servers.tcp_port if tcp else servers.http_port, stall_after=2 * MiB)
    upload = UPLOADERS[protocol](
        source,
        proxy.tcp_url if tcp else proxy.url,
        TransferOptions(retry=POLICY, timeouts=Timeouts(stall=STALL)),
        parallel=1,
    )
    result = asyncio.run(asyncio.wait_for(upload, 30))
    assert result.sha256 == digest
    assert _stall_bound(proxy) < STALL + MARGIN


@pytest.mark.parametrize("protocol", ["ws", "tcp"])
def test_a_stall_after_the_last_byte_left_is_noticed_too(
    protocol: str, servers: Servers, link: Callable[..., FlakyLink], tmp_path: Path
) -> None:
    """The whole file fits in the kernel's socket buffers: the client has sent everything
    (and ``done``/DONE) before the link stops. Bytes are still owed to the server, so the
    wait for its answer is a stalled link too, not a read timeout minutes long."""
    from freight.client import Timeouts

    source = tmp_path / "small.bin"
    digest = make_file(source, 2 * MiB)
    tcp = protocol == "tcp"
    proxy = link(servers.tcp_port if tcp else servers.http_port, stall_after=256 * 1024)
    upload = UPLOADERS[protocol](
        source,
        proxy.tcp_url if tcp else proxy.url,
        TransferOptions(retry=POLICY, timeouts=Timeouts(stall=STALL)),
        parallel=1,
    )
    result = asyncio.run(asyncio.wait_for(upload, 30))
    assert result.sha256 == digest
    assert _stall_bound(proxy) < STALL + MARGIN


@pytest.mark.parametrize("protocol", ["http", "tcp"])
def test_download_resumes_after_a_stalled_link(
    protocol: str, servers: Servers, link: Callable[..., FlakyLink], tmp_path: Path
) -> None:
    source = tmp_path / "big.bin"
    digest = make_file(source, STALL_SIZE)
    file_id = asyncio.run(upload_file(source, servers.url)).url.rstrip("/").rsplit("/", 1)[-1]
    tcp = protocol == "tcp"
    port = servers.tcp_port if tcp else servers.http_port
    proxy = link(port, direction="down", stall_after=2 * MiB)
    out = tmp_path / "copy.bin"
    done = run_cli(
        "get",
        f"{proxy.tcp_url}/{file_id}" if tcp else f"{proxy.url}/files/{file_id}",
        "-o", str(out), "--stall-timeout", str(STALL), "--json",
        env=cli_env(tmp_path / "state"),
        timeout=40,
    )  # fmt: skip
    assert json_output(done)["sha256"] == digest == sha256_of(out)
    assert _stall_bound(proxy) < STALL + MARGIN


def test_cli_chunks_cross_a_cutting_link_with_small_chunks(
    servers: Servers, link: Callable[..., FlakyLink], tmp_path: Path, env: dict[str, str]
) -> None:
    source = tmp_path / "big.bin"
    digest = make_file(source, 8 * MiB)
    proxy = link(servers.http_port, cut_every=CUT)
    args = ("send", str(source), proxy.url, "--protocol", "chunks", "--parallel", "1")
    done = run_cli(*args, "--chunk-size", str(256 * 1024), "--retries", "2", "--json", env=env)
    assert json_output(done)["sha256"] == digest
    assert proxy.stats.cuts >= 5
    refused = run_cli("send", str(source), proxy.url, "--chunk-size", "1024", env=env)
    assert refused.returncode == 2 and "--protocol chunks only" in refused.stderr
