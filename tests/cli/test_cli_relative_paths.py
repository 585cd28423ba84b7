"""``freight send DIR URL`` keeps each file's folder path (``relativePath``, as Uppy sends
it) over every protocol, and the server refuses a hostile path over every protocol.

Each protocol carries the path in its own field (tus ``Upload-Metadata``, the chunk API's
``relative_path``, WebSocket ``start``'s ``relative_path``, TCP PUT's name with the path
flag); the server keeps it as the same ``relativePath`` metadata, read back here with a tus
HEAD whatever protocol sent the file.
"""

from __future__ import annotations

import base64
import json
import socket
import struct
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cli_support import json_output, make_file, run_cli, stored_files, tcp_url, tus_metadata

from freight.protocol.frames import SERVER_FRAMES, Accepted, ErrorFrame, FrameDecoder, Hello


@pytest.mark.parametrize("protocol", ["tus", "chunks", "ws", "tcp"])
def test_a_folder_sent_keeps_each_files_path(
    server_factory: Any, tmp_path: Path, env: dict[str, str], protocol: str
) -> None:
    server = server_factory(data_dir=tmp_path / "data", args=["--tcp-port", "0"]).start()
    url = tcp_url(server) if protocol == "tcp" else server.url
    (tmp_path / "photos" / "2024").mkdir(parents=True)
    digests = {
        "photos/a.bin": make_file(tmp_path / "photos" / "a.bin", 3000),
        "photos/2024/b.bin": make_file(tmp_path / "photos" / "2024" / "b.bin", 5000),
        "notes.txt": make_file(tmp_path / "notes.txt", 1000),
    }
    done = run_cli("send", "photos", "notes.txt", url, "--protocol", protocol, "--json",
                   env=env, cwd=tmp_path)  # fmt: skip
    report = json_output(done)
    assert (report["sent"], report["failed"]) == (3, 0)
    ids = {entry["sha256"]: entry["id"] for entry in stored_files(server.url)}
    for path in ("photos/a.bin", "photos/2024/b.bin"):
        metadata = tus_metadata(server.url, ids[digests[path]])
        assert metadata["relativePath"] == path
        assert metadata["filename"] == path.rsplit("/", 1)[1]
    # A file given by itself has no folder to keep.
    assert "relativePath" not in tus_metadata(server.url, ids[digests["notes.txt"]])


HOSTILE = ["/", "../up.bin", "a/../../b", "a//b", "C:\\x", "a/\x01b", "x" * 300]


def _tus_create(server_url: str, path: str) -> int:
    encoded = base64.b64encode(path.encode()).decode()
    request = urllib.request.Request(
        f"{server_url}/files/",
        method="POST",
        headers={
            "Tus-Resumable": "1.0.0",
            "Upload-Length": "10",
            "Upload-Metadata": f"filename {base64.b64encode(b'f').decode()},relativePath {encoded}",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _chunks_create(server_url: str, path: str) -> int:
    body = json.dumps({"name": "f", "size": 10, "relative_path": path}).encode()
    request = urllib.request.Request(
        f"{server_url}/api/uploads",
        data=body,
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


async def _ws_start(server_url: str, path: str) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"{server_url}/api/ws") as ws,
    ):
        await ws.send_str(json.dumps({"op": "start", "name": "f", "size": 10,
                                      "relative_path": path}))  # fmt: skip
        reply = json.loads(await ws.receive_str(timeout=10))
        assert isinstance(reply, dict)
        return reply


def _tcp_put(address: str, path: str) -> bytes:
    """The error code the server answers a PUT with the path flag (0x02) and ``path`` with
    (empty: accepted). Built by hand: the client's own Put refuses such a path."""
    host, port = address.removeprefix("tcp://").split(":")
    name = path.encode()
    body = struct.pack(">Q32s", 10, bytes(32)) + name
    put = struct.pack(">BBHI", 0x03, 0x02, 0, len(body)) + body
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(Hello().encode() + put)
        decoder = FrameDecoder(SERVER_FRAMES)
        frames: list[Any] = []
        while not any(isinstance(f, ErrorFrame | Accepted) for f in frames):
            data = sock.recv(65536)
            assert data, f"the server closed after {frames}"
            frames += decoder.feed(data)
    answer = frames[-1]
    return answer.code.encode() if isinstance(answer, ErrorFrame) else b""


async def test_every_protocol_refuses_a_hostile_path(freight_server: Any) -> None:
    url = freight_server.url
    for path in HOSTILE:
        assert _tus_create(url, path) == 400, path
        assert _chunks_create(url, path) == 400, path
        reply = await _ws_start(url, path)
        assert (reply["op"], reply["code"], reply.get("field")) == (
            "error", "ERR_INVALID_MESSAGE", "relative_path"), path  # fmt: skip
    # and a good one is taken by each
    assert _tus_create(url, "photos/a.bin") == 201
    assert _chunks_create(url, "photos/a.bin") == 201
    assert (await _ws_start(url, "photos/a.bin"))["op"] == "ready"


def test_tcp_refuses_a_hostile_path(server_factory: Any, tmp_path: Path) -> None:
    server = server_factory(data_dir=tmp_path / "data", args=["--tcp-port", "0"]).start()
    address = tcp_url(server)
    for path in HOSTILE:
        assert _tcp_put(address, path) == b"ERR_MALFORMED_FRAME", path
    assert _tcp_put(address, "photos/a.bin") == b"", "a good path is accepted"
