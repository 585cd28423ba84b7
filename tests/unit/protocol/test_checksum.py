"""Checksum algorithms of the tus checksum extension."""

from __future__ import annotations

import hashlib

import pytest

from freight.errors import ChecksumMismatch, UnsupportedChecksumAlgorithm
from freight.protocol.checksum import (
    CHECKSUM_ALGORITHMS,
    digest_size,
    new_checksum,
    verify_checksum,
)


def test_sha1_is_advertised_first() -> None:
    assert CHECKSUM_ALGORITHMS[0] == "sha1"
    assert set(CHECKSUM_ALGORITHMS) == {"sha1", "sha256", "md5", "sha512"}


@pytest.mark.parametrize("algo", CHECKSUM_ALGORITHMS)
def test_hashers_match_hashlib(algo: str) -> None:
    hasher = new_checksum(algo)
    hasher.update(b"hello ")
    hasher.update(memoryview(b"world"))
    assert hasher.digest() == hashlib.new(algo, b"hello world").digest()
    assert hasher.digest_size == digest_size(algo) == len(hasher.digest())


def test_spec_example_sha1() -> None:
    hasher = new_checksum("sha1")
    hasher.update(b"hello world")
    verify_checksum(hasher, hashlib.sha1(b"hello world").digest())


def test_mismatch() -> None:
    hasher = new_checksum("sha256")
    hasher.update(b"hello")
    with pytest.raises(ChecksumMismatch, match="Upload-Checksum sha256"):
        verify_checksum(hasher, b"\0" * 32)


@pytest.mark.parametrize("algo", ["crc32", "SHA1", "", "sha3_256"])
def test_unknown_algorithm(algo: str) -> None:
    with pytest.raises(UnsupportedChecksumAlgorithm, match="Upload-Checksum algorithm"):
        new_checksum(algo)
    with pytest.raises(UnsupportedChecksumAlgorithm):
        digest_size(algo)
