"""``freight send --protocol chunks``: the chunk API client end to end, against a real
``freight serve``, with the CLI in subprocesses and a proxy to hang the link."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cli_support import (
    ChaosProxy,
    MiB,
    _Rule,
    json_output,
    make_file,
    run_cli,
    sha256_of,
    start_cli,
)

from freight.client import RetryPolicy
from freight.client.chunks import upload_chunks
from freight.client.options import TransferOptions

Proxy = Callable[[int], ChaosProxy]
CHUNKS = ("--protocol", "chunks", "--parallel", "4")
OVERHEAD = 64 * 1024  # request and response headers, generously


def _status(server_url: str, upload_id: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{server_url}/api/uploads/{upload_id}", timeout=10) as resp:
        data = json.load(resp)
    assert isinstance(data, dict)
    return data


def _remembered_id(state_dir: Path) -> str:
    entries = json.loads((state_dir / "uploads.json").read_text())["entries"]
    assert len(entries) == 1, entries
    url = str(entries[0]["upload_url"])
    assert "/api/uploads/" in url, url
    return url.rsplit("/", 1)[1]


def _settled(read: Callable[[], int], quiet: float = 0.5, timeout: float = 30) -> int:
    """``read()`` once it has not changed for ``quiet`` seconds."""
    deadline = time.monotonic() + timeout
    value, since = read(), time.monotonic()
    while time.monotonic() - since < quiet:
        assert time.monotonic() < deadline, "the value never settled"
        time.sleep(0.05)
        now = read()
        if now != value:
            value, since = now, time.monotonic()
    return value


def test_send_chunks_round_trip(freight_server: Any, tmp_path: Path, env: dict[str, str]) -> None:
    source = tmp_path / "vm image.qcow2"
    size = 25 * MiB + 123
    digest = make_file(source, size)
    sent = json_output(run_cli("send", str(source), freight_server.url, *CHUNKS, "--json", env=env))
    assert sent["sha256"] == digest and sent["verified"] is True
    assert sent["size"] == size and sent["name"] == "vm image.qcow2"
    assert sent["resumed_from"] == 0 and sent["seconds"] >= 0
    assert sent["url"].startswith(freight_server.url + "/files/")
    upload_id = sent["url"].rsplit("/", 1)[1]

    state = _status(freight_server.url, upload_id)
    assert state["state"] == "finished" and state["sha256"] == digest
    assert state["chunk_size"] == 10 * MiB and state["chunk_count"] == 3
    assert state["wire_bytes"] == size  # every chunk went over the wire exactly once

    copy = tmp_path / "copy.qcow2"
    got = json_output(run_cli("get", sent["url"], "-o", str(copy), "--json", env=env))
    assert got["sha256"] == digest and sha256_of(copy) == digest


def test_send_chunks_resumes_after_the_client_is_killed(
    freight_server: Any,
    chaos_proxy: Proxy,
    tmp_path: Path,
    env: dict[str, str],
    state_dir: Path,
) -> None:
    size = 100 * MiB + 5
    source = tmp_path / "big.img"
    digest = make_file(source, size)
    proxy = chaos_proxy(freight_server.port)
    proxy.reset(up=_Rule(blackhole_after=45 * MiB))  # a hung link: the client keeps waiting
    client = start_cli("send", str(source), proxy.url, *CHUNKS, "--json", env=env)
    deadline = time.monotonic() + 60
    while proxy.counted["up"] < 45 * MiB:
        assert time.monotonic() < deadline and client.poll() is None, "the upload did not start"
        time.sleep(0.02)
    upload_id = _remembered_id(state_dir)

    def wire() -> int:
        return int(_status(freight_server.url, upload_id)["wire_bytes"])

    _settled(wire)  # everything that passed the proxy has reached the server
    client.send_signal(signal.SIGKILL)
    client.communicate(timeout=30)
    wire_before = _settled(wire)  # the server has let go of the chunks cut short
    before = _status(freight_server.url, upload_id)
    received = before["received_bytes"]
    assert 0 < received < size, before
    assert before["missing_bytes"], before  # the chunks cut short kept what arrived

    proxy.reset()
    result = json_output(run_cli("send", str(source), proxy.url, *CHUNKS, "--json", env=env))
    assert result["sha256"] == digest and result["verified"] is True
    assert result["resumed_from"] == received
    after = _status(freight_server.url, upload_id)
    assert after["state"] == "finished" and after["sha256"] == digest
    # Only the missing bytes were sent, each exactly once.
    assert after["wire_bytes"] - wire_before == size - received
    assert proxy.counted["up"] <= size - received + OVERHEAD
    assert not json.loads((state_dir / "uploads.json").read_text())["entries"]


def test_send_chunks_with_a_token(server_factory: Any, tmp_path: Path, env: dict[str, str]) -> None:
    server = server_factory(data_dir=tmp_path / "data", args=["--token", "s3cret"]).start()
    source = tmp_path / "small.bin"
    digest = make_file(source, 3 * MiB)
    refused = run_cli("send", str(source), server.url, *CHUNKS, env=env)
    assert refused.returncode == 1 and refused.stderr.startswith("Error: ")
    assert "401" in refused.stderr and "Traceback" not in refused.stderr
    done = run_cli("send", str(source), server.url, *CHUNKS, "--json", "--token", "s3cret", env=env)
    assert json_output(done)["sha256"] == digest


def test_send_chunks_of_an_empty_file(
    freight_server: Any, tmp_path: Path, env: dict[str, str]
) -> None:
    source = tmp_path / "empty"
    source.write_bytes(b"")
    sent = json_output(run_cli("send", str(source), freight_server.url, *CHUNKS, "--json", env=env))
    assert sent["size"] == 0 and sent["sha256"] == sha256_of(source) and sent["verified"]


def test_a_chunk_cut_midway_goes_on_from_where_the_server_kept_it(
    freight_server: Any, chaos_proxy: Proxy, tmp_path: Path
) -> None:
    """A cut PUT keeps what reached the server; the client asks before it resends and sends
    only the rest, so the server reads each byte once and the link carries at most what
    was in flight at the cut again (less than a chunk)."""
    size = 40 * MiB + 7
    source = tmp_path / "cut.bin"
    digest = make_file(source, size)
    proxy = chaos_proxy(freight_server.port)
    cut = 14 * MiB + 12345  # inside the second round of chunks, off every boundary
    proxy.reset(up=_Rule(cut_after=cut))
    retry = RetryPolicy(attempts=5, initial_delay=0.05, max_delay=0.2)
    upload = upload_chunks(source, proxy.url, TransferOptions(retry=retry), parallel=4)
    result = asyncio.run(asyncio.wait_for(upload, 120))
    assert result.sha256 == digest and result.verified
    assert proxy.rules["up"].cut_after is None, "the link was never cut"
    upload_id = result.url.rsplit("/", 1)[1]
    state = _status(freight_server.url, upload_id)
    assert state["chunk_size"] == 10 * MiB
    again = proxy.counted["up"] - size
    print(f"\nsent again through the proxy: {again} bytes; server read {state['wire_bytes']}")
    assert state["wire_bytes"] == size  # nothing the server had was sent to it again
    assert again <= 10 * MiB + OVERHEAD
