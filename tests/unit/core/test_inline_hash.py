"""The inline running hash: what it saves when the recorded prefix runs past it, and how
bytes hashed elsewhere (out of order, from what the store held) move it on."""

from __future__ import annotations

import hashlib
import os

from freight.core.hashing import new_sha256
from freight.core.inline_hash import InlineHash


def test_a_prefix_past_the_hash_saves_where_the_hash_stands() -> None:
    data = os.urandom(300)
    seen: list[int] = []
    inline = InlineHash(new_sha256(), 0, seen.append)
    inline.feed(0, data[:100])
    inline.feed(200, data[200:])  # ahead of the hash: not hashed here
    assert seen == [100, 100]
    # Bytes 100..300 came in out of order and are recorded too: the state at 100 is saved.
    reached = inline.recorded(300)
    assert reached is not None and reached[0] == 100
    assert reached[1].hexdigest() == hashlib.sha256(data[:100]).hexdigest()
    assert inline.recorded(300) is None  # nothing new


def test_advance_goes_on_from_bytes_hashed_elsewhere_unless_a_writer_moved_it() -> None:
    data = os.urandom(300)
    inline = InlineHash(new_sha256(), 0)
    inline.feed(0, data[:100])
    start, hasher = inline.current()
    hasher.update(data[100:200])
    assert inline.advance(start, 200, hasher)
    inline.feed(200, data[200:])
    position, final = inline.current()
    assert position == 300 and final.hexdigest() == hashlib.sha256(data).hexdigest()
    _, stale = inline.current()
    assert not inline.advance(start, 200, stale)  # the hash is not at 100 any more
    inline.rewind()  # back to the state advance saved, not before it
    assert inline.current()[0] == 200
