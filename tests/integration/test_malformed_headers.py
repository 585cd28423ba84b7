"""Hostile header values never produce a 500, and never change what is stored."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tus_fixtures import OCTETS, TUS, live_server

HEADERS = (
    "Tus-Resumable",
    "Upload-Offset",
    "Upload-Length",
    "Upload-Defer-Length",
    "Upload-Metadata",
    "Upload-Checksum",
    "Upload-Concat",
    "Content-Type",
    "X-HTTP-Method-Override",
    "Upload-Draft-Interop-Version",
    "Upload-Complete",
    "Upload-Incomplete",
    "Range",
    "If-Range",
    "If-None-Match",
    "If-Match",
)
METHODS = ("POST", "HEAD", "PATCH", "GET", "OPTIONS")  # DELETE would end the probe

# Header values must be latin-1 text without line breaks to go on the wire at all.
header_text = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, blacklist_characters="\x7f"),
    max_size=40,
)
tokens = st.sampled_from(
    [
        "0",
        "1",
        "-1",
        "abc",
        "?1",
        "?0",
        "1.0.0",
        "final;/files/x",
        "partial",
        "sha1 AAAA",
        "bytes=0-",
        "bytes=5-1",
        '"x"',
        'W/"x"',
        "9" * 30,
        "",
        " ",
        OCTETS,
    ]
)


def test_no_header_value_causes_a_server_error(tmp_path: Path) -> None:
    asyncio.run(_run(tmp_path))


async def _run(tmp_path: Path) -> None:
    async with live_server(tmp_path / "data") as server:
        data = os.urandom(4096)
        url = await server.create(len(data))
        assert (await server.patch(url, 0, data[:1000])).status == 204
        before = await server.snapshot(url)
        targets = [f"{server.url}/files/", url]

        @settings(
            max_examples=1000,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture],
        )
        @given(
            method=st.sampled_from(METHODS),
            target=st.sampled_from(targets),
            values=st.dictionaries(
                st.sampled_from(HEADERS), st.one_of(header_text, tokens), max_size=5
            ),
            body=st.sampled_from([b"", b"x" * 10]),
        )
        def probe(method: str, target: str, values: dict[str, str], body: bytes) -> None:
            # hypothesis drives from a worker thread; requests run on the server's loop.
            asyncio.run_coroutine_threadsafe(send(method, target, values, body), loop).result()

        statuses: list[int] = []

        async def send(method: str, target: str, values: dict[str, str], body: bytes) -> None:
            headers = {**TUS, **values}
            async with server.http.request(
                method, target, headers=headers, data=body or None
            ) as resp:
                await resp.read()
                statuses.append(resp.status)
                assert resp.status < 500, (method, target, headers, resp.status)

        loop = asyncio.get_running_loop()
        await asyncio.to_thread(_in_thread, probe, loop)
        assert len(statuses) >= 1000
        assert any(400 <= status < 500 for status in statuses)
        # Whatever was accepted appended only at the right offset with the upload's own
        # bytes or was refused; the first 1000 bytes are untouched either way.
        assert server.part_bytes(url)[:1000] == data[:1000]
        assert (await server.offset(url)) >= before[0]


def _in_thread(probe: object, loop: asyncio.AbstractEventLoop) -> None:
    probe()  # type: ignore[operator]
