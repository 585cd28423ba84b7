"""Downloads from nodes that never received the file: ranges, validators, digests, curl's
resume, and with ``--download-redirect`` bytes straight from the bucket."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

from tests.fleet.conftest import Fleet, MiB
from tests.integration.helpers import (
    PatternStream,
    create_upload,
    download,
    patch_stream,
    repr_digest_hex,
    request,
)

SIZE = 13 * MiB + 4321


def sha256_of(source: PatternStream, start: int, end: int) -> str:
    hasher = hashlib.sha256()
    for chunk in source.chunks(start, end):
        hasher.update(chunk)
    return hasher.hexdigest()


def uploaded(fleet: Fleet, source: PatternStream) -> str:
    """The path of ``source`` uploaded through a node of its own (stopped afterwards)."""
    writer = fleet.start_node()
    url = create_upload(writer.url, source.size, {"filename": "far.bin"})
    assert patch_stream(url, 0, source.chunks(), source.size).status == 204
    writer.stop()
    return url.removeprefix(writer.url)


def curl(*args: str) -> None:
    done = subprocess.run(["curl", "-sS", *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_a_node_that_never_saw_the_file_serves_ranges_validators_and_digests(
    fleet: Fleet, tmp_path: Path
) -> None:
    source = PatternStream(SIZE, seed=41)
    path = uploaded(fleet, source)
    url = fleet.start_node().url + path
    whole = download(url)
    assert (whole.status, whole.size, whole.sha256) == (200, SIZE, source.sha256())
    assert repr_digest_hex(whole.header("Repr-Digest")) == source.sha256()
    etag = whole.header("ETag")
    assert etag and etag.startswith('"')

    start, end = 5 * MiB - 3, 11 * MiB + 17  # across parts
    ranged = download(url, {"Range": f"bytes={start}-{end}"})
    assert ranged.status == 206
    assert ranged.header("Content-Range") == f"bytes {start}-{end}/{SIZE}"
    assert (ranged.size, ranged.sha256) == (end + 1 - start, sha256_of(source, start, end + 1))
    # The whole file's digest, whatever part of it a response carries.
    assert repr_digest_hex(ranged.header("Repr-Digest")) == source.sha256()

    same = download(url, {"Range": f"bytes={start}-", "If-Range": etag})
    assert (same.status, same.sha256) == (206, sha256_of(source, start, SIZE))
    changed = download(url, {"Range": f"bytes={start}-", "If-Range": '"another"'})
    assert (changed.status, changed.size, changed.sha256) == (200, SIZE, source.sha256())

    # curl -C - sends the rest of a partial file.
    partial = tmp_path / "partial.bin"
    with partial.open("wb") as out:
        for chunk in source.chunks(0, 7 * MiB + 9):
            out.write(chunk)
    curl("-f", "-C", "-", "-o", str(partial), url)
    assert partial.stat().st_size == SIZE
    assert hashlib.sha256(partial.read_bytes()).hexdigest() == source.sha256()


def test_a_redirecting_node_sends_clients_to_the_bucket(fleet: Fleet, tmp_path: Path) -> None:
    source = PatternStream(SIZE, seed=42)
    path = uploaded(fleet, source)
    node = fleet.start_node("--download-redirect")
    answer = request("GET", node.url + path)
    assert answer.status == 302, answer.body
    location = answer.header("Location")
    assert location and location.startswith(fleet.seaweed.endpoint + "/"), location
    direct = download(location)
    assert (direct.status, direct.size, direct.sha256) == (200, SIZE, source.sha256())
    start, end = 3 * MiB + 1, 9 * MiB
    ranged = download(location, {"Range": f"bytes={start}-{end}"})
    assert ranged.status == 206
    assert (ranged.size, ranged.sha256) == (end + 1 - start, sha256_of(source, start, end + 1))
    # A client asking the node for a range follows the redirect with it.
    out = tmp_path / "ranged.bin"
    curl("-f", "-L", "-r", f"{start}-{end}", "-o", str(out), node.url + path)
    assert hashlib.sha256(out.read_bytes()).hexdigest() == sha256_of(source, start, end + 1)
