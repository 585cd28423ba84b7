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


def test_writers_and_the_follower_each_hash_what_the_other_did_not() -> None:
    """A follower reading back recorded bytes and a writer feeding its buffer move one hash:
    each only from where it stands, so nothing is hashed twice or skipped."""
    data = os.urandom(400)
    inline = InlineHash(new_sha256(), 0, followed=True)
    inline.feed(100, data[100:200])  # ahead: left to the follower
    assert inline.follow(0, data[:100])
    assert inline.follow(100, data[100:200])
    settled = inline.settle(200)
    assert settled is not None and settled[0] == 200
    inline.feed(200, data[200:300])  # continues the hash: taken here
    assert not inline.follow(200, data[200:300])  # the follower stops: already hashed
    assert inline.settle(200) is None  # and saves nothing behind the writer
    assert inline.follow(300, data[300:])
    position, final = inline.current()
    assert position == 400 and final.hexdigest() == hashlib.sha256(data).hexdigest()


def test_a_rewind_stops_a_follower_reading_past_it() -> None:
    """A writer that fails rewinds the hash to the last recorded state; a follower that
    read on past that point must not hash onto the rewound state."""
    data = os.urandom(300)
    inline = InlineHash(new_sha256(), 0, followed=True)
    inline.feed(0, data[:100])
    assert inline.recorded(100) is not None
    inline.feed(100, data[100:200])  # hashed, never recorded: its writer fails
    inline.rewind()
    assert not inline.follow(200, data[200:])
    assert inline.current()[0] == 100
    assert inline.follow(100, data[100:200]) and inline.follow(200, data[200:])
    assert inline.current()[1].hexdigest() == hashlib.sha256(data).hexdigest()
