"""The S3 spool keeps uploaded parts the running hash has not reached, boundedly."""

from __future__ import annotations

import os
from pathlib import Path

from freight.storage.s3_spool import HOLD_PARTS, Spool

P = 4096


def fill(spool: Spool, index: int, data: bytes) -> None:
    assert spool.write(index, 0, memoryview(data[index * P : (index + 1) * P]), index * P)
    assert spool.start_ship(index, index * P, (index + 1) * P)
    spool.shipped(index, True)


def files(spool: Spool) -> int:
    return len(list(spool.path.iterdir())) if spool.path.exists() else 0


def test_nothing_is_held_unless_something_hashes(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "u", P)
    data = os.urandom(3 * P)
    for index in (2, 1):
        fill(spool, index, data)
    assert spool.held() == [] and files(spool) == 0


def test_held_parts_are_the_nearest_to_the_hash_and_go_once_it_passes(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "u", P)
    count = HOLD_PARTS + 4
    data = os.urandom(count * P)
    spool.hashed_through(0)
    for index in reversed(range(1, count)):
        fill(spool, index, data)
        assert files(spool) <= HOLD_PARTS
    assert spool.held() == list(range(1, HOLD_PARTS + 1))
    buffer = bytearray(2 * P)
    got = spool.read_held(P + 10, memoryview(buffer))
    assert bytes(buffer[:got]) == data[P + 10 : 2 * P]  # to the end of the part's file
    assert spool.read_held(0, memoryview(buffer)) == 0  # part 0 is not here
    spool.hashed_through(3 * P)
    assert spool.held() == list(range(3, HOLD_PARTS + 1))
    fill(spool, 0, data)  # behind the hash: goes at once
    assert 0 not in spool.held()
    spool.drop_partials(keep=-1)  # a sync's clean-up leaves held parts alone
    assert files(spool) == len(spool.held())
