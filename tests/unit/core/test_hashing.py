"""The saveable SHA-256: any split, any buffer type, any save/restore point equals hashlib."""

from __future__ import annotations

import hashlib
import itertools
import os
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from freight._types import Buffer
from freight.core import hashing
from freight.core.hashing import StatefulSha256, new_sha256, sha256_from_state

needs_state = pytest.mark.skipif(
    hashing._LIB is None, reason="libcrypto lacks SHA256_*: hash state cannot be saved here"
)


def as_bytes(chunk: bytes) -> Buffer:
    return chunk


def as_bytearray(chunk: bytes) -> Buffer:
    return bytearray(chunk)


def as_view(chunk: bytes) -> Buffer:
    return memoryview(bytearray(chunk))


def as_readonly_slice(chunk: bytes) -> Buffer:
    padded = b"<<" + chunk + b">>"
    return memoryview(padded)[2 : 2 + len(chunk)]


def as_writable_slice(chunk: bytes) -> Buffer:
    padded = bytearray(b"<<" + chunk + b">>")
    return memoryview(padded)[2 : 2 + len(chunk)]


def as_wide_view(chunk: bytes) -> Buffer:
    """A view whose items are not bytes (the hasher must count bytes, not items)."""
    if len(chunk) % 4:
        return memoryview(bytearray(chunk))
    return memoryview(bytearray(chunk)).cast("I")


WRAPPERS: list[Callable[[bytes], Buffer]] = [
    as_bytes,
    as_bytearray,
    as_view,
    as_readonly_slice,
    as_writable_slice,
    as_wide_view,
]


@st.composite
def split_data(draw: st.DrawFn) -> tuple[bytes, list[int]]:
    data = draw(st.binary(max_size=600))
    cuts = draw(st.lists(st.integers(0, len(data)), max_size=8))
    return data, sorted(cuts)


def pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


@given(split_data(), st.lists(st.sampled_from(WRAPPERS), min_size=1, max_size=4))
def test_any_split_and_buffer_type_equals_hashlib(
    split: tuple[bytes, list[int]], wrappers: list[Callable[[bytes], Buffer]]
) -> None:
    data, cuts = split
    hasher = new_sha256()
    for index, piece in enumerate(pieces(data, cuts)):
        hasher.update(wrappers[index % len(wrappers)](piece))
    assert hasher.digest() == hashlib.sha256(data).digest()
    assert hasher.hexdigest() == hashlib.sha256(data).hexdigest()


@needs_state
@given(split_data(), st.integers(0, 9))
def test_state_saved_and_restored_anywhere(split: tuple[bytes, list[int]], save_at: int) -> None:
    data, cuts = split
    parts = pieces(data, cuts)
    save_at = min(save_at, len(parts))
    hasher: StatefulSha256 | None = new_sha256()
    for index, piece in enumerate(parts):
        if index == save_at:
            assert hasher is not None
            state = hasher.state()
            assert state is not None
            hasher = sha256_from_state(bytes(state))
        assert hasher is not None
        hasher.update(piece)
    assert hasher is not None
    restored = sha256_from_state(hasher.state() or b"")
    assert restored is not None
    assert restored.hexdigest() == hashlib.sha256(data).hexdigest()


@given(st.binary(max_size=300), st.binary(max_size=300))
def test_copy_is_independent(head: bytes, tail: bytes) -> None:
    hasher = new_sha256()
    hasher.update(head)
    clone = hasher.copy()
    clone.update(tail)
    assert hasher.hexdigest() == hashlib.sha256(head).hexdigest()
    assert clone.hexdigest() == hashlib.sha256(head + tail).hexdigest()
    hasher.update(b"!")
    assert clone.hexdigest() == hashlib.sha256(head + tail).hexdigest()


def test_digest_does_not_end_the_hash() -> None:
    hasher = new_sha256()
    hasher.update(b"abc")
    first = hasher.digest()
    assert hasher.digest() == first
    hasher.update(b"def")
    assert hasher.digest() == hashlib.sha256(b"abcdef").digest()


@needs_state
def test_state_across_megabytes_at_an_odd_boundary() -> None:
    data = os.urandom(1024 * 1024 + 17)
    hasher = new_sha256()
    hasher.update(memoryview(data)[:700_001])
    state = hasher.state()
    assert state is not None and len(state) == 112
    resumed = sha256_from_state(state)
    assert resumed is not None
    resumed.update(memoryview(data)[700_001:])
    assert resumed.hexdigest() == hashlib.sha256(data).hexdigest()
    # The original keeps going on its own.
    hasher.update(data[700_001:])
    assert hasher.hexdigest() == hashlib.sha256(data).hexdigest()


@needs_state
@pytest.mark.parametrize("bad", [b"", b"x" * 111, b"x" * 113, b"x" * 256])
def test_a_state_of_the_wrong_size_is_not_restored(bad: bytes) -> None:
    assert sha256_from_state(bad) is None


def test_hashlib_fallback_reports_no_state() -> None:
    fallback = hashing._HashlibSha256()
    fallback.update(b"ab")
    fallback.update(memoryview(b"xcdx")[1:3])
    clone = fallback.copy()
    clone.update(b"e")
    assert fallback.state() is None
    assert fallback.hexdigest() == hashlib.sha256(b"abcd").hexdigest()
    assert clone.digest() == hashlib.sha256(b"abcde").digest()
