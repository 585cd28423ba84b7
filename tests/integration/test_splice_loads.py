"""A spliced body is moved a pipe-load at a time, however finely its sender dribbles it.

A thread that splices whatever has arrived each time it wakes keeps pace with a fast sender
segment by segment: a system call for every 64 KiB or so, tens of thousands per GiB. It
sleeps instead until a pipe-load is queued (or the rest of the body, or the idle timeout).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest
from test_direct_body import _connect, _patch_head, _read_response
from tus_fixtures import live_server

from freight.core.pipes import SplicePipe, splicing_available

MiB = 1024 * 1024
PIECE = 64 * 1024


@pytest.fixture
def fills(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Bytes moved by each splice from a socket into a pipe."""
    moved: list[int] = []
    real_fill = SplicePipe.fill_from

    def counting_fill(pipe: SplicePipe, sock: int, most: int) -> int:
        got = real_fill(pipe, sock, most)
        moved.append(got)
        return got

    monkeypatch.setattr(SplicePipe, "fill_from", counting_fill)
    return moved


async def test_a_dribbled_body_is_spliced_in_pipe_loads(tmp_path: Path, fills: list[int]) -> None:
    assert splicing_available()
    body = os.urandom(8 * MiB)
    async with live_server(tmp_path, fsync="never") as server:
        url = await server.create(len(body))
        reader, writer = await _connect(url)
        writer.write(_patch_head(url, 0, len(body)))
        for start in range(0, len(body), PIECE):
            writer.write(body[start : start + PIECE])
            await writer.drain()
            await asyncio.sleep(0.002)  # the splicing thread catches up meanwhile
        status, headers = await _read_response(reader)
        writer.close()
        assert status == 204
        assert headers["upload-offset"] == str(len(body))
        assert server.part_bytes(url) == body
        session = await server.engine.get(url.rsplit("/", 1)[1])
        assert session.sha256 == hashlib.sha256(body).hexdigest()
    spliced = sum(fills)
    assert spliced > len(body) // 2  # the body did go through the pipe
    # 128 pieces; a splice per piece (or per few) is what this guards against.
    assert len(fills) <= 24, fills
