"""``Upload-Metadata`` is what the client sent, nothing more: a protocol's own state (the chunk
API's chunk size, a declared SHA-256) lives in the session's own fields, so it neither shows
up in another protocol's view of the upload nor can a client forge it through metadata.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import struct
from pathlib import Path

from tus_fixtures import LiveServer, live_server, metadata

from freight.protocol.frames import Hello, Put
from freight.protocol.metadata import parse_upload_metadata
from freight.server.tcp import TcpServer, TcpSettings

KiB = 1024
SHA = "ab" * 32
IETF = {"Upload-Draft-Interop-Version": "7"}


def _sent_metadata() -> str:
    """Keys a chunk or TCP upload keeps for itself, a name, an empty value and a bare key."""
    return ",".join([metadata(chunk_size="4096", sha256=SHA, filename="a b.txt"), "empty ", "bare"])


async def _tus_head_metadata(server: LiveServer, url: str) -> dict[str, str | None]:
    resp = await server.head(url)
    assert resp.status == 200, resp.status
    return parse_upload_metadata(resp.headers.get("Upload-Metadata", ""))


async def _chunk_upload(server: LiveServer, size: int, **fields: object) -> dict[str, object]:
    body = {"name": "c.bin", "size": size, **fields}
    async with server.http.post(f"{server.url}/api/uploads", json=body) as resp:
        assert resp.status == 201, await resp.text()
        created: dict[str, object] = await resp.json()
        return created


async def test_tus_metadata_round_trips_exactly(tmp_path: Path) -> None:
    sent = _sent_metadata()
    async with live_server(tmp_path) as server:
        url = await server.create(10, {"Upload-Metadata": sent})
        expected = parse_upload_metadata(sent)
        assert expected == {
            "chunk_size": "4096",
            "sha256": SHA,
            "filename": "a b.txt",
            "empty": None,
            "bare": None,
        }
        assert await _tus_head_metadata(server, url) == expected
        # Nor do the fields a transport keeps for itself come from the client's metadata.
        session = await server.engine.get(url.rsplit("/", 1)[1])
        assert session.chunk_size is None and session.declared_sha256 is None
        # Still exactly that once finished, whatever "sha256" the client called its own.
        resp = await server.patch(url, 0, b"0123456789")
        assert resp.status == 204
        assert await _tus_head_metadata(server, url) == expected


async def test_ietf_head_shows_only_what_the_client_sent(tmp_path: Path) -> None:
    sent = _sent_metadata()
    async with live_server(tmp_path) as server:
        headers = {**IETF, "Upload-Complete": "?0", "Upload-Metadata": sent}
        async with server.http.post(f"{server.url}/files/", headers=headers) as resp:
            assert resp.status == 201, await resp.text()
            url = server.absolute(resp.headers["Location"])
        assert await _tus_head_metadata(server, url) == parse_upload_metadata(sent)
        async with server.http.head(url, headers=IETF) as resp:
            assert resp.status == 204, resp.status
            shown = resp.headers.get("Upload-Metadata")
            assert shown is None or parse_upload_metadata(shown) == parse_upload_metadata(sent)


async def test_a_tus_upload_cannot_be_written_through_the_chunk_api(tmp_path: Path) -> None:
    async with live_server(tmp_path) as server:
        url = await server.create(8 * KiB, {"Upload-Metadata": _sent_metadata()})
        upload_id = url.rsplit("/", 1)[1]
        chunk = f"{server.url}/api/uploads/{upload_id}/chunks/1"
        async with server.http.put(chunk, data=os.urandom(4 * KiB)) as resp:
            answer = await resp.json()
            assert resp.status == 404, answer
            assert answer["code"] == "ERR_UPLOAD_NOT_FOUND"
            assert "/api/uploads" in answer["message"], answer
        complete = f"{server.url}/api/uploads/{upload_id}/complete"
        async with server.http.post(complete, json={}) as resp:
            assert resp.status == 404
        # Its status is still visible, as an upload without chunks.
        async with server.http.get(f"{server.url}/api/uploads/{upload_id}") as resp:
            status = await resp.json()
            assert resp.status == 200 and status["chunk_size"] is None, status
        assert await server.offset(url) == 0
        assert (await server.engine.get(upload_id)).received.total() == 0


async def test_a_chunk_upload_shows_only_its_name_as_metadata(tmp_path: Path) -> None:
    data = os.urandom(10 * KiB)
    digest = hashlib.sha256(data).hexdigest()
    async with live_server(tmp_path) as server:
        created = await _chunk_upload(server, len(data), sha256=digest)
        upload_id = str(created["id"])
        url = f"{server.url}/files/{upload_id}"
        assert await _tus_head_metadata(server, url) == {"filename": "c.bin"}
        session = await server.engine.get(upload_id)
        assert session.metadata == {"filename": "c.bin"}
        assert (session.chunk_size, session.declared_sha256) == (created["chunk_size"], digest)


async def test_a_declared_sha256_is_checked_at_completion(tmp_path: Path) -> None:
    data = os.urandom(10 * KiB)
    digest = hashlib.sha256(data).hexdigest()
    async with live_server(tmp_path) as server:
        for declared, status in ((SHA, 422), (digest.upper(), 200)):
            created = await _chunk_upload(server, len(data), sha256=declared)
            api = f"{server.url}/api/uploads/{created['id']}"
            async with server.http.put(f"{api}/chunks/0", data=data) as resp:
                assert resp.status == 200, await resp.text()
            async with server.http.post(f"{api}/complete", json={}) as resp:
                answer = await resp.json()
                assert resp.status == status, answer
        assert answer["sha256"] == digest


async def _frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    frame_type, _, _, length = struct.unpack(">BBHI", await reader.readexactly(8))
    return frame_type, await reader.readexactly(length)


async def test_a_tcp_put_keeps_its_declared_sha256_out_of_the_metadata(tmp_path: Path) -> None:
    async with live_server(tmp_path) as server:
        tcp = TcpServer(server.engine, TcpSettings())
        _, port = await tcp.start("127.0.0.1", 0)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(Hello().encode() + Put(10, "t.bin", bytes.fromhex(SHA)).encode())
            await writer.drain()
            assert (await _frame(reader))[0] == 2  # WELCOME
            frame_type, body = await _frame(reader)
            assert frame_type == 6, body  # ACCEPTED
            upload_id = body[16:].decode()
            writer.close()
        finally:
            await tcp.close()
        url = f"{server.url}/files/{upload_id}"
        assert await _tus_head_metadata(server, url) == {"filename": "t.bin"}
        assert (await server.engine.get(upload_id)).declared_sha256 == SHA


async def test_a_websocket_start_keeps_its_sha256_out_of_the_metadata(tmp_path: Path) -> None:
    async with live_server(tmp_path) as server:
        async with server.http.ws_connect(f"{server.url}/api/ws") as ws:
            await ws.send_json({"op": "start", "name": "w.bin", "size": 10, "sha256": SHA})
            ready = await ws.receive_json(timeout=10)
            assert ready["op"] == "ready", ready
        url = f"{server.url}/files/{ready['id']}"
        assert await _tus_head_metadata(server, url) == {"filename": "w.bin"}
        assert (await server.engine.get(ready["id"])).declared_sha256 == SHA
