"""The chunk client across a link that drops connections more often than a chunk takes:
it sends smaller pieces of a chunk after repeated losses of a whole one, by itself.

The server's default chunk is 10 MiB; :class:`FlakyLink` resets each connection after a
random allowance, so a whole chunk rarely (or never) gets through in one request. Before
pieces, a client with ``--retries 2`` gave up after three lost chunks in a row.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cli_support import MiB, json_output, make_file, run_cli
from flaky_link import FlakyLink

from freight.client import RetryPolicy
from freight.client.chunk_status import GROW_AFTER, LOSSES_TO_SHRINK, MIN_PIECE, PieceSizer
from freight.client.chunks import upload_chunks
from freight.client.options import TransferOptions
from freight.client.resume_store import ResumeStore, UploadKey


@pytest.fixture
def server_url(tmp_path: Path, server_factory: Any) -> Any:
    return server_factory(data_dir=tmp_path / "data").start()


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


def test_cli_send_crosses_a_link_cutting_every_1_to_3_mib_with_default_chunks(
    server_url: Any, link: Callable[..., FlakyLink], tmp_path: Path, env: dict[str, str]
) -> None:
    source = tmp_path / "big.bin"
    digest = make_file(source, 28 * MiB)
    proxy = link(server_url.port, cut_between=(1 * MiB, 3 * MiB), seed=20)
    done = run_cli(
        "send", str(source), proxy.url, "--protocol", "chunks", "--parallel", "2",
        "--retries", "2", "--json",
        env=env, timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert json_output(done)["sha256"] == digest
    assert proxy.stats.cuts >= 10


SIZE = 96 * MiB
POLICY = RetryPolicy(attempts=2, initial_delay=0.01, max_delay=0.05)


def test_bytes_sent_again_stay_bounded_when_cuts_come_every_1_to_12_mib(
    server_url: Any, link: Callable[..., FlakyLink], tmp_path: Path
) -> None:
    """What each cut costs is the piece in flight; once pieces are small that is little."""
    source = tmp_path / "big.bin"
    digest = make_file(source, SIZE)
    proxy = link(server_url.port, cut_between=(1 * MiB, 12 * MiB), seed=7)
    upload = upload_chunks(source, proxy.url, TransferOptions(retry=POLICY), parallel=2)
    result = asyncio.run(asyncio.wait_for(upload, 180))
    assert result.sha256 == digest
    sent = proxy.stats.forwarded["up"]
    print(f"forwarded {sent / MiB:.1f} MiB for {SIZE / MiB:.0f} MiB, {proxy.stats.cuts} cuts")
    assert proxy.stats.cuts >= 5
    assert sent < SIZE * 1.5


@pytest.mark.parametrize("chunk_digests", [False, True])
async def test_a_resume_sends_only_the_bytes_partly_sent_chunks_lack(
    server_url: Any, tmp_path: Path, chunk_digests: bool
) -> None:
    source = tmp_path / "big.bin"
    digest = make_file(source, 24 * MiB + 5)
    data = source.read_bytes()
    endpoint = f"{server_url.url}/api/uploads"
    async with aiohttp.ClientSession() as session:
        async with session.post(endpoint, json={"name": "big.bin", "size": len(data)}) as resp:
            created = await resp.json()
        chunk = created["chunk_size"]
        upload_url = f"{endpoint}/{created['id']}"
        for n, length in ((0, 3 * MiB), (1, 1 * MiB), (2, len(data) - 2 * chunk)):
            start = n * chunk
            total = min(chunk, len(data) - start)
            headers = {"Content-Range": f"bytes 0-{length - 1}/{total}"}
            body = data[start : start + length]
            async with session.put(f"{upload_url}/chunks/{n}", data=body, headers=headers) as resp:
                assert resp.status == 200, await resp.text()
    store = ResumeStore(tmp_path / "state")
    store.put_upload(UploadKey.for_file(source, endpoint), upload_url)
    result = await upload_chunks(
        source, server_url.url, TransferOptions(resume_store=store), chunk_digests=chunk_digests
    )
    already = 4 * MiB + len(data) - 2 * chunk
    assert result.resumed_from == already
    assert result.sha256 == digest
    async with aiohttp.ClientSession() as session, session.get(upload_url) as resp:
        status = await resp.json()
    assert status["wire_bytes"] == len(data)  # every byte crossed once


def test_pieces_halve_after_losses_and_grow_back_after_successes() -> None:
    sizer = PieceSizer(10 * MiB, 256 * 1024)
    assert sizer.lost(10 * MiB, 5 * MiB, losses=1) == 10 * MiB  # one loss: bad luck, maybe
    assert sizer.lost(10 * MiB, 3 * MiB, losses=2) == 5 * MiB  # the same chunk again: halve
    assert sizer.size == 5 * MiB
    sizer.got_through(5 * MiB)
    assert sizer.lost(5 * MiB, 4 * MiB, losses=1) == 5 * MiB
    # A second loss at this size, from another chunk: 7 MiB lost for 5 acknowledged.
    assert sizer.lost(5 * MiB, 3 * MiB, losses=1) == 5 * MiB // 2 == sizer.size
    for _ in range(GROW_AFTER - 1):
        sizer.got_through(sizer.size)
    assert sizer.size == 5 * MiB // 2
    sizer.got_through(sizer.size)
    assert sizer.size == 5 * MiB
    for _ in range(20):
        sizer.lost(sizer.size, sizer.size // 2, losses=LOSSES_TO_SHRINK)
    assert sizer.size == sizer.floor == MIN_PIECE
    assert sizer.lost(MIN_PIECE, 1000, losses=LOSSES_TO_SHRINK) == MIN_PIECE  # no smaller
    whole_only = PieceSizer(10 * MiB, None)  # a server without pieces
    assert whole_only.lost(10 * MiB, 1000, losses=5) == 10 * MiB == whole_only.floor
