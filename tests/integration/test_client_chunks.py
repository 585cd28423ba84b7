"""The chunk API client: one hash per byte by default, or per-chunk digests from one read.

Against a real ``freight serve``. By default chunks carry no digest: the whole-file SHA-256
is hashed from disk beside the transfer and the server checks it at ``complete``. With
``chunk_digests=True`` a fresh upload reads every chunk once (into a buffer its
``Content-Digest``, the file's SHA-256 and the request body all use) and the disk reader of
the whole-file hash reads nothing; a resume with gaps hashes the chunks the server already
had from disk beside the transfer; large chunks or many streams fall back to reading twice
with flat memory; a failed attempt is retried from the same bytes. These are the rules
where bodies go through Python (https); over plain http see test_client_sendfile.py.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import freight.client.chunk_sender
from freight.client.chunk_reader import ChunkReader
from freight.client.chunks import upload_chunks
from freight.client.hashing import SplitHasher
from freight.client.options import TransferOptions
from freight.client.resume_store import ResumeStore, UploadKey

MiB = 1024 * 1024


class _Reads:
    """Bytes read for chunks, and bytes the whole-file hash had to read from disk."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.chunk_bytes = 0
        self.disk_bytes = 0
        read_into = ChunkReader.read_into
        from_disk = SplitHasher._read_from_disk

        def counting_read_into(reader: ChunkReader, view: memoryview, start: int) -> None:
            read_into(reader, view, start)
            self.chunk_bytes += len(view)

        def counting_from_disk(hasher: SplitHasher) -> None:
            before = hasher.hashed
            from_disk(hasher)
            self.disk_bytes += hasher.hashed - before

        monkeypatch.setattr(ChunkReader, "read_into", counting_read_into)
        monkeypatch.setattr(SplitHasher, "_read_from_disk", counting_from_disk)


@pytest.fixture(autouse=True)
def _bodies_through_python(monkeypatch: pytest.MonkeyPatch) -> None:
    """These are the rules where bodies go through Python (https: no sendfile); over plain
    http chunks are sent from the file by the kernel (test_client_sendfile.py)."""
    monkeypatch.setattr(freight.client.chunk_sender, "can_sendfile", lambda url: False)


def _source(tmp_path: Path, size: int) -> tuple[Path, bytes]:
    data = os.urandom(size)
    path = tmp_path / "source.bin"
    path.write_bytes(data)
    return path, data


async def _check_stored(server_url: str, url: str, data: bytes) -> None:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == 200
        assert await resp.read() == data
    assert url.startswith(server_url)


async def test_a_fresh_upload_reads_each_byte_once(
    freight_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = _Reads(monkeypatch)
    source, data = _source(tmp_path, 7 * MiB + 3)
    sent = await upload_chunks(
        source, freight_server.url, requested_chunk_size=MiB, parallel=3, chunk_digests=True
    )
    assert sent.sha256 == hashlib.sha256(data).hexdigest() and sent.verified
    assert reads.chunk_bytes == len(data)
    assert reads.disk_bytes == 0
    await _check_stored(freight_server.url, sent.url, data)


async def test_a_resume_hashes_the_chunks_the_server_had_from_disk(
    freight_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source, data = _source(tmp_path, 6 * MiB + 100)
    endpoint = f"{freight_server.url}/api/uploads"
    async with aiohttp.ClientSession() as session:
        body = {"name": "source.bin", "size": len(data), "chunk_size": MiB}
        async with session.post(endpoint, json=body) as resp:
            assert resp.status == 201
            upload_id = (await resp.json())["id"]
        for n in (0, 2, 3):  # chunks 1, 4, 5 and 6 are missing: gaps between them
            chunk = data[n * MiB : (n + 1) * MiB]
            digest = base64.b64encode(hashlib.sha256(chunk).digest()).decode()
            headers = {"Content-Digest": f"sha-256=:{digest}:"}
            async with session.put(
                f"{endpoint}/{upload_id}/chunks/{n}", data=chunk, headers=headers
            ) as resp:
                assert resp.status == 200
    store = ResumeStore(tmp_path / "state")
    store.put_upload(UploadKey.for_file(source, endpoint), f"{endpoint}/{upload_id}")
    reads = _Reads(monkeypatch)
    sent = await upload_chunks(
        source,
        freight_server.url,
        TransferOptions(resume_store=store),
        parallel=2,
        chunk_digests=True,
    )
    assert sent.resumed_from == 3 * MiB
    assert sent.sha256 == hashlib.sha256(data).hexdigest()
    assert reads.chunk_bytes == len(data) - 3 * MiB  # only the missing chunks were read
    assert reads.disk_bytes >= 3 * MiB  # the chunks the server had, hashed from disk
    await _check_stored(freight_server.url, sent.url, data)


async def test_chunks_too_many_to_hold_are_read_twice_instead(
    freight_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(freight.client.chunk_sender, "HELD_CHUNKS_BUDGET", 2 * MiB)
    reads = _Reads(monkeypatch)
    source, data = _source(tmp_path, 5 * MiB + 7)
    sent = await upload_chunks(
        source, freight_server.url, requested_chunk_size=MiB, parallel=4, chunk_digests=True
    )
    assert sent.sha256 == hashlib.sha256(data).hexdigest()
    assert reads.chunk_bytes == 0  # streamed from the file, not held
    await _check_stored(freight_server.url, sent.url, data)


async def test_by_default_chunks_carry_no_digest_and_the_file_is_hashed_from_disk(
    freight_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One hash per byte: the whole file's, from disk beside the transfer; the server gets
    bare chunks (which it may splice into place) and checks the file's SHA-256 at the end."""
    reads = _Reads(monkeypatch)
    digests: list[str | None] = []
    put = aiohttp.ClientSession.put

    def recording_put(session: aiohttp.ClientSession, url: Any, **kwargs: Any) -> Any:
        digests.append(kwargs.get("headers", {}).get("Content-Digest"))
        return put(session, url, **kwargs)

    monkeypatch.setattr(aiohttp.ClientSession, "put", recording_put)
    source, data = _source(tmp_path, 9 * MiB + 5)
    sent = await upload_chunks(source, freight_server.url, requested_chunk_size=MiB, parallel=3)
    assert sent.sha256 == hashlib.sha256(data).hexdigest() and sent.verified
    assert digests == [None] * 10
    assert reads.chunk_bytes == len(data)  # each chunk read once, to be sent
    assert reads.disk_bytes == len(data)  # and the file once more, by the hash's reader
    await _check_stored(freight_server.url, sent.url, data)


async def test_a_failed_attempt_is_sent_again_from_the_same_bytes(
    freight_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    put = freight.client.chunk_sender.ChunkSender._put
    failed: list[int] = []

    async def flaky_put(upload: Any, url: Any, chunk: Any, *piece: Any, **options: Any) -> None:
        if chunk.n == 1 and not failed:
            failed.append(chunk.n)
            raise aiohttp.ServerDisconnectedError()
        await put(upload, url, chunk, *piece, **options)

    monkeypatch.setattr(freight.client.chunk_sender.ChunkSender, "_put", flaky_put)
    reads = _Reads(monkeypatch)
    source, data = _source(tmp_path, 4 * MiB)
    sent = await upload_chunks(
        source,
        freight_server.url,
        TransferOptions(on_retry=lambda _: None),
        requested_chunk_size=MiB,
        parallel=2,
    )
    assert failed == [1]
    assert sent.sha256 == hashlib.sha256(data).hexdigest()
    assert reads.chunk_bytes == len(data)  # the retry did not read chunk 1 again
    await _check_stored(freight_server.url, sent.url, data)
