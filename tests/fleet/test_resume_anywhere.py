"""An upload started through one node resumes through another."""

from __future__ import annotations

from tests.fleet.conftest import Fleet, MiB
from tests.integration.helpers import (
    PatternStream,
    create_upload,
    download,
    head_offset,
    patch_stream,
    repr_digest_hex,
)


def test_a_tus_upload_started_on_one_node_finishes_on_another(fleet: Fleet) -> None:
    a, b = fleet.start_node(), fleet.start_node()
    source = PatternStream(12 * MiB + 321, seed=3)
    half = 7 * MiB + 5
    url_a = create_upload(a.url, source.size, {"filename": "across.bin"})
    reply = patch_stream(url_a, 0, source.chunks(0, half), half)
    assert reply.status == 204, "".join(a.output_tail)[-3000:]
    url_b = url_a.replace(a.url, b.url)
    assert head_offset(url_b) == half
    rest = source.size - half
    reply = patch_stream(url_b, half, source.chunks(half), rest)
    assert reply.status == 204
    assert repr_digest_hex(reply.header("Repr-Digest")) == source.sha256()
    # Any node serves it, though only the others received its bytes.
    c = fleet.start_node()
    fetched = download(url_a.replace(a.url, c.url))
    assert fetched.status == 200
    assert (fetched.size, fetched.sha256) == (source.size, source.sha256())
