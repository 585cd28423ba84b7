"""What skipping costs: a file is read once to be sent, whether or not it was hashed first.

``send`` asks the server for a file of the same size before anything else; only if there is
one is the file hashed (one read) and asked for by digest; that digest is then the upload's,
so sending reads it once more and hashes nothing (the second read comes from the page cache
for files that fit in it). Measured with the process's own ``rchar`` (every read call,
and every byte ``sendfile`` moves: over plain http the body goes with ``sendfile`` while the
hash reads the same pages from the page cache behind it, so a fresh file counts twice there,
though the disk reads it once).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cli_support import MiB, io_of, json_output, make_file

from freight.client.errors import LocalFileChanged
from freight.client.hashing import SplitHasher, known_digest

SIZE = 24 * MiB
SLACK = 3 * MiB  # the interpreter's own reads (modules), responses, generously


def test_reads_per_file_sent_or_skipped(
    freight_server: Any, tmp_path: Path, env: dict[str, str]
) -> None:
    url = freight_server.url
    small = tmp_path / "small.bin"
    make_file(small, 4096)
    base, _, done = io_of("send", str(small), url, "--json", env=env)
    json_output(done)

    first = tmp_path / "first.bin"
    make_file(first, SIZE)
    fresh, _, done = io_of("send", str(first), url, "--json", env=env)
    json_output(done)
    # No file of that size on the server: sent once, hashed while sent (one more pass over
    # the same pages when the body goes with sendfile).
    assert fresh - base < 2 * SIZE + SLACK, (fresh - base) / MiB

    same_size = tmp_path / "other.bin"
    make_file(same_size, SIZE)
    hashed_first, _, done = io_of("send", str(same_size), url, "--json", env=env)
    json_output(done)
    # One of that size is there: hashed (one read), not found, sent (one more read, no hash).
    assert 2 * SIZE - SLACK < hashed_first - base < 2 * SIZE + SLACK, (hashed_first - base) / MiB

    copy = tmp_path / "copy.bin"
    copy.write_bytes(first.read_bytes())
    skipped, _, done = io_of("send", str(copy), url, "--json", env=env)
    assert json_output(done)["skipped"] is True
    # Hashed once, found, nothing sent.
    assert SIZE - SLACK < skipped - base < SIZE + SLACK, (skipped - base) / MiB


async def test_a_known_digest_is_not_computed_again(tmp_path: Path) -> None:
    """Inside known_digest, the upload's hasher of that file reads and hashes nothing."""
    path = tmp_path / "f.bin"
    digest = bytes.fromhex(make_file(path, MiB))
    with known_digest(path, MiB, digest):
        hasher = SplitHasher(path, 0)
        hasher.start()
        hasher.feed(0, b"not the file's bytes")
        assert hasher.hashed == MiB
        assert await hasher.finish(MiB) == digest
        with pytest.raises(LocalFileChanged):
            await hasher.finish(MiB + 1)
        other = tmp_path / "other.bin"
        other_digest = make_file(other, 10)
        elsewhere = SplitHasher(other, 0)  # another file is hashed as always
        elsewhere.start()
        assert (await elsewhere.finish(10)).hex() == other_digest
