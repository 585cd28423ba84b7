"""``freight send --protocol ws`` against a real ``freight serve``, in subprocesses.

Interruptions come from the fault-injecting proxy of :mod:`cli_support`; the server's view
of an upload is read over the same WebSocket protocol (``resume``), written from
docs/websocket.md.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from cli_support import ChaosProxy, MiB, _Rule, json_output, make_file, run_cli, sha256_of

Proxy = Callable[[int], ChaosProxy]
FRAME_OVERHEAD = 14  # bytes of header per masked binary frame of 64 KiB or more


def _remembered_id(state_dir: Path) -> str:
    entries = json.loads((state_dir / "uploads.json").read_text())["entries"]
    assert len(entries) == 1, entries
    assert entries[0]["server"].endswith("/api/ws")
    return str(entries[0]["upload_url"]).rsplit("/", 1)[1]


def _durable_offset(server_url: str, upload_id: str) -> int:
    """Ask the server where the upload stands, the way a resuming client does."""

    async def ask() -> int:
        async with aiohttp.ClientSession() as http:
            for _ in range(100):
                async with http.ws_connect(f"{server_url}/api/ws") as ws:
                    await ws.send_str(json.dumps({"op": "resume", "id": upload_id}))
                    reply = json.loads((await ws.receive(timeout=10)).data)
                if reply.get("code") != "ERR_UPLOAD_LOCKED":  # busy finishing: try again
                    break
                await asyncio.sleep(0.05)
        assert reply["op"] == "ready", reply
        return int(reply["offset"])

    return asyncio.run(ask())


def test_send_over_websocket_round_trip(
    freight_server: Any, tmp_path: Path, env: dict[str, str]
) -> None:
    source = tmp_path / "image.iso"
    digest = make_file(source, 20 * MiB + 5)
    done = run_cli("send", "--protocol", "ws", str(source), freight_server.url, "--json", env=env)
    sent = json_output(done)
    assert sent["sha256"] == digest and sent["verified"] is True
    assert sent["size"] == 20 * MiB + 5 and sent["name"] == "image.iso"
    assert sent["resumed_from"] == 0
    assert sent["url"].startswith(freight_server.url + "/files/")
    out = tmp_path / "copy.iso"
    got = json_output(run_cli("get", sent["url"], "-o", str(out), "--json", env=env))
    assert got["sha256"] == digest and sha256_of(out) == digest


def test_send_over_websocket_human_output(
    freight_server: Any, tmp_path: Path, env: dict[str, str]
) -> None:
    source = tmp_path / "small.bin"
    digest = make_file(source, 1000)
    done = run_cli("send", "--protocol", "ws", str(source), freight_server.url, env=env)
    assert done.returncode == 0, done.stderr
    assert f"SHA-256: {digest}" in done.stdout
    assert "matches the server's" in done.stdout


def test_empty_file_over_websocket(
    freight_server: Any, tmp_path: Path, env: dict[str, str]
) -> None:
    source = tmp_path / "empty"
    source.write_bytes(b"")
    sent = json_output(
        run_cli("send", "--protocol", "ws", str(source), freight_server.url, "--json", env=env)
    )
    assert sent["size"] == 0 and sent["sha256"] == sha256_of(source)


def test_send_over_websocket_resumes_in_a_later_run(
    freight_server: Any, chaos_proxy: Proxy, tmp_path: Path, env: dict[str, str], state_dir: Path
) -> None:
    size = 48 * MiB
    source = tmp_path / "big.bin"
    digest = make_file(source, size)
    proxy = chaos_proxy(freight_server.port)
    proxy.reset(up=_Rule(cut_after=21 * MiB))
    args = ("send", "--protocol", "ws", str(source), proxy.url, "--json")
    first = run_cli(*args, "--retries", "0", env=env)
    assert first.returncode == 1 and first.stdout == ""
    lines = first.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), first.stderr

    upload_id = _remembered_id(state_dir)
    durable = _durable_offset(freight_server.url, upload_id)
    # Everything that reached the server was kept, not only the last granted window.
    assert 16 * MiB < durable <= 21 * MiB

    proxy.reset()
    second = json_output(run_cli(*args, env=env))
    assert second["resumed_from"] == durable
    assert second["sha256"] == digest and second["verified"] is True
    assert second["url"].endswith(upload_id)
    # Nothing the server held was sent again.
    frames = (size - durable) // (64 * 1024) + 1  # the client sends frames of 64 KiB or more
    assert proxy.counted["up"] <= size - durable + frames * FRAME_OVERHEAD + 4096
    assert not (state_dir / "uploads.json").exists() or _entries(state_dir) == []


def _entries(state_dir: Path) -> list[Any]:
    return list(json.loads((state_dir / "uploads.json").read_text())["entries"])


def test_send_over_websocket_retries_cuts_on_its_own(
    freight_server: Any, chaos_proxy: Proxy, tmp_path: Path, env: dict[str, str]
) -> None:
    size = 32 * MiB
    source = tmp_path / "big.bin"
    digest = make_file(source, size)
    proxy = chaos_proxy(freight_server.port)
    proxy.reset(up=_Rule(cut_after=12 * MiB))
    done = run_cli("send", "--protocol", "ws", str(source), proxy.url, "--json", env=env)
    result = json_output(done)
    assert result["sha256"] == digest and result["verified"] is True
    assert "retrying in" in done.stderr
    assert proxy.counted["up"] < 2 * size - 8 * MiB


def test_send_over_websocket_with_a_token(
    server_factory: Any, tmp_path: Path, env: dict[str, str]
) -> None:
    server = server_factory(data_dir=tmp_path / "data", args=["--token", "t0ken"]).start()
    source = tmp_path / "a.bin"
    digest = make_file(source, 2 * MiB)
    args = ("send", "--protocol", "ws", str(source), server.url)
    refused = run_cli(*args, "--retries", "0", env=env)
    assert refused.returncode == 1
    assert refused.stderr.startswith("Error: ") and len(refused.stderr.strip().splitlines()) == 1
    assert "token" in refused.stderr
    sent = json_output(run_cli(*args, "--token", "t0ken", "--json", env=env))
    assert sent["sha256"] == digest
