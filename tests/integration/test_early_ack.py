"""The final tus PATCH is answered once the bytes are stored; the SHA-256 settles after.

Reads of the upload right after that answer wait for the finish (never a half-finished
file, never a 404), a client that asks for the digest (``Want-Repr-Digest``) gets it in the
answer, and a SIGKILL after the answer but before the finish loses nothing: the restart
finishes the upload with the right digest.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from .helpers import (
    TUS,
    MiB,
    PatternStream,
    create_upload,
    download,
    free_port,
    patch_stream,
    repr_digest_hex,
    request,
)

SIZE = 48 * MiB


def send_whole(base_url: str, source: PatternStream) -> tuple[str, Any]:
    url = create_upload(base_url, source.size, {"filename": "a.bin"})
    reply = patch_stream(url, 0, source.chunks(), source.size)
    assert reply.status == 204, reply.body
    assert reply.header("Upload-Offset") == str(source.size)
    return url, reply


@pytest.mark.parametrize("read", ["tus HEAD", "download", "listing", "lookup", "ietf HEAD"])
def test_a_read_right_after_the_answer_sees_the_finished_file(
    freight_server: Any, read: str
) -> None:
    source = PatternStream(SIZE, seed=3)
    url, reply = send_whole(freight_server.url, source)
    assert reply.header("Repr-Digest") is None, "answered before the digest settled"
    assert reply.header("Upload-Expires") is None, "a complete upload does not expire"
    upload_id = url.rsplit("/", 1)[-1]
    if read == "tus HEAD":
        head = request("HEAD", url, TUS)
        assert head.status == 200
        assert repr_digest_hex(head.header("Repr-Digest")) == source.sha256()
    elif read == "download":
        got = download(url)
        assert got.status == 200 and got.sha256 == source.sha256()
        assert repr_digest_hex(got.header("Repr-Digest")) == source.sha256()
    elif read == "listing":
        listing = request("GET", f"{freight_server.url}/api/files")
        files = {f["id"]: f for f in json.loads(listing.body)["files"]}
        assert files[upload_id]["sha256"] == source.sha256()
    elif read == "lookup":
        query = f"size={source.size}&sha256={source.sha256()}"
        found = json.loads(request("GET", f"{freight_server.url}/api/files?{query}").body)
        assert [f["id"] for f in found["files"]] == [upload_id]
    else:
        head = request("HEAD", url, {"Upload-Draft-Interop-Version": "8"})
        assert head.header("Upload-Complete") == "?1"
        assert repr_digest_hex(head.header("Repr-Digest")) == source.sha256()


@pytest.mark.parametrize("field", ["Want-Repr-Digest", "Upload-Checksum"])
def test_a_client_that_asks_or_checks_gets_the_digest_in_the_answer(
    freight_server: Any, field: str
) -> None:
    source = PatternStream(8 * MiB, seed=4)
    url = create_upload(freight_server.url, source.size)
    body = b"".join(source.chunks())
    sha1 = base64.b64encode(hashlib.sha1(body).digest()).decode()
    value = "sha-256=10" if field == "Want-Repr-Digest" else f"sha1 {sha1}"
    reply = patch_stream(url, 0, source.chunks(), source.size, headers={field: value})
    assert reply.status == 204
    assert repr_digest_hex(reply.header("Repr-Digest")) == source.sha256()


def test_sigkill_after_the_answer_finishes_on_restart(server_factory: Any, tmp_path: Path) -> None:
    """Killed after the 204 (its part file not yet renamed, so before the finish): the
    restart settles the digest from the saved hash state and finishes the file."""
    port = free_port()
    for attempt in range(4):
        data_dir = tmp_path / f"data-{attempt}"
        server = server_factory(data_dir=data_dir, port=port, args=["--fsync", "never"])
        server.start()
        source = PatternStream(SIZE * 2, seed=10 + attempt)
        url, _ = send_whole(server.url, source)
        server.kill()
        part = data_dir / "uploads" / f"{url.rsplit('/', 1)[-1]}.part"
        if part.exists():
            print(f"killed before the finish on attempt {attempt + 1}")
            break
    else:
        pytest.fail("the finish always ended before the kill: no crash in between to test")
    server = server_factory(data_dir=data_dir, port=port, args=["--fsync", "never"]).start()
    url = url.replace(url.split("/files/")[0], server.url)
    got = download(url)
    assert got.status == 200
    assert got.size == source.size and got.sha256 == source.sha256()
    assert repr_digest_hex(got.header("Repr-Digest")) == source.sha256()
    assert not part.exists()
