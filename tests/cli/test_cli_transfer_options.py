"""One TransferOptions for every transfer: each uploader and downloader honours the same
object against a real server, and a CLI command builds one from its flags for all its files."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest
from cli_support import MiB, make_file, sha256_of
from click.testing import CliRunner

import freight.cli.transfer
from freight.cli.main import cli
from freight.client import ClientError, ResumeStore, RetryPolicy, Timeouts, download_file
from freight.client.options import TransferOptions
from freight.client.protocols import UPLOADERS
from freight.client.stdin_upload import upload_stream
from freight.client.stream_download import download_to_stream
from freight.client.tcp import download_tcp

TOKEN = "s3cret"
TCP_LINE = re.compile(r"tcp listening on tcp://[^\s:]+:(\d+)")


@pytest.fixture
def guarded(tmp_path: Path, server_factory: Any) -> tuple[str, str]:
    """A server that wants a token, on HTTP and raw TCP: its two base URLs."""
    server = server_factory(
        data_dir=tmp_path / "data", args=["--token", TOKEN, "--tcp-port", "0"]
    ).start()
    deadline = time.monotonic() + 20
    while not (match := TCP_LINE.search("".join(server.output_tail))):
        assert time.monotonic() < deadline, list(server.output_tail)
        time.sleep(0.02)
    return server.url, f"tcp://127.0.0.1:{match.group(1)}"


def _for(protocol: str, http: str, tcp: str) -> str:
    return tcp if protocol == "tcp" else http


async def test_every_uploader_and_downloader_honours_one_options_object(
    guarded: tuple[str, str], tmp_path: Path
) -> None:
    http, tcp = guarded
    seen: list[int] = []
    store = ResumeStore(tmp_path / "state")
    options = TransferOptions(
        token=TOKEN,
        retry=RetryPolicy(attempts=1, initial_delay=0.05),
        timeouts=Timeouts(stall=20.0),
        progress=seen.append,
        resume_store=store,
        chunk_size=256 * 1024,
    )
    tokenless = dataclasses.replace(options, token=None, retry=RetryPolicy(attempts=0))
    remembered = tmp_path / "state" / "uploads.json"
    for protocol, uploader in sorted(UPLOADERS.items()):
        source = tmp_path / f"{protocol}.bin"
        size = 2 * MiB + len(protocol)
        digest = make_file(source, size)
        url = _for(protocol, http, tcp)
        with pytest.raises(ClientError):  # the token travels in the options, nowhere else
            await uploader(source, url, tokenless, parallel=2)
        remembered.unlink(missing_ok=True)
        seen.clear()
        sent = await uploader(source, url, options, parallel=2)
        assert sent.sha256 == digest and sent.verified, protocol
        assert seen and seen[-1] == size, protocol  # progress came from the options
        # The options' store remembered the upload while it ran and forgot it at the end.
        assert json.loads(remembered.read_text())["entries"] == [], protocol

        downloader = download_tcp if protocol == "tcp" else download_file
        with pytest.raises(ClientError):
            await downloader(sent.url, tmp_path / f"{protocol}.refused", tokenless)
        seen.clear()
        target = tmp_path / f"{protocol}.copy"
        fetched = await downloader(sent.url, target, options)
        assert fetched.sha256 == digest == sha256_of(target), protocol
        assert seen[-1] == size, protocol

    # The two stream transfers take the same object (a stream has nothing to resume).
    read_end, write_end = os.pipe()
    os.write(write_end, b"streamed" * 1000)
    os.close(write_end)
    try:
        streamed = await upload_stream(read_end, http, "s.bin", options)
    finally:
        os.close(read_end)
    assert streamed.size == 8000 and streamed.verified
    read_end, write_end = os.pipe()
    try:
        seen.clear()
        got = await download_to_stream(streamed.url, write_end, options)
        assert os.read(read_end, 10_000) == b"streamed" * 1000
    finally:
        os.close(read_end)
        os.close(write_end)
    assert got.verified and seen[-1] == 8000


def test_send_builds_one_options_object_for_every_file(
    guarded: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    http, _ = guarded
    received: list[TransferOptions] = []
    real = UPLOADERS["chunks"]

    async def recording(path: Path, url: str, options: TransferOptions, **specific: Any) -> Any:
        received.append(options)
        return await real(path, url, options, **specific)

    monkeypatch.setitem(UPLOADERS, "chunks", recording)
    folder = tmp_path / "tree"
    folder.mkdir()
    for name in ("a.bin", "b.bin", "c.bin"):
        make_file(folder / name, MiB + len(name))
    flags = ["--token", TOKEN, "--retries", "3", "--stall-timeout", "7", "--protocol", "chunks"]
    state = {"FREIGHT_STATE_DIR": str(tmp_path / "state")}
    result = CliRunner().invoke(cli, ["send", str(folder), http, "-q", *flags], env=state)
    assert result.exit_code == 0, result.output
    assert len(received) == 3
    first = received[0]
    assert first.token == TOKEN and first.retry.attempts == 3 and first.timeouts.stall == 7
    for options in received:
        # Each file has its own progress and retry callbacks; everything else is one object.
        assert dataclasses.replace(options, progress=None, on_retry=None) == (
            dataclasses.replace(first, progress=None, on_retry=None)
        )
        assert options.resume_store is first.resume_store and options.progress is not None


def test_get_hands_its_options_to_the_downloader(
    guarded: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    http, _ = guarded
    source = tmp_path / "one.bin"
    digest = make_file(source, MiB)
    options = TransferOptions(token=TOKEN)
    sent = asyncio.run(UPLOADERS["tus"](source, http, options, parallel=1))
    received: list[TransferOptions] = []

    async def recording(url: str, output: Any, options: TransferOptions, **specific: Any) -> Any:
        received.append(options)
        return await download_file(url, output, options, **specific)

    monkeypatch.setattr(freight.cli.transfer, "download_file", recording)
    target = tmp_path / "copy.bin"
    flags = ["--token", TOKEN, "--retries", "2", "--stall-timeout", "9", "-q"]
    state = {"FREIGHT_STATE_DIR": str(tmp_path / "state")}
    result = CliRunner().invoke(cli, ["get", sent.url, "-o", str(target), *flags], env=state)
    assert result.exit_code == 0, result.output
    assert sha256_of(target) == digest
    [given] = received
    assert given.token == TOKEN and given.retry.attempts == 2 and given.timeouts.stall == 9
    assert given.progress is not None and given.resume_store is not None
