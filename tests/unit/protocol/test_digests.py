"""RFC 9530 Repr-Digest / Content-Digest / Want-*-Digest."""

from __future__ import annotations

import base64
import contextlib
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from freight.errors import FreightError, InvalidHeader
from freight.protocol.digests import (
    build_digest_header,
    build_repr_digest,
    parse_digest_header,
    parse_want_digest,
    sha256_from_digest_header,
)

HELLO_SHA256 = hashlib.sha256(b"hello world").digest()


def test_build_repr_digest() -> None:
    value = build_repr_digest(HELLO_SHA256.hex())
    assert value == f"sha-256=:{base64.b64encode(HELLO_SHA256).decode()}:"
    assert value == "sha-256=:uU0nuZNNPgilLlLX2n2r+sSE7+N6U4DukIj3rOLvzek=:"


@pytest.mark.parametrize("bad", ["", "ab", "zz" * 32, " " + "a" * 63, "a" * 66])
def test_build_repr_digest_rejects_bad_hex(bad: str) -> None:
    with pytest.raises(ValueError, match="64 hex"):
        build_repr_digest(bad)


def test_build_digest_header_rejects_bad_key() -> None:
    with pytest.raises(ValueError):
        build_digest_header({"SHA-256": b"x"})


def test_parse_several_and_unknown() -> None:
    value = "sha-256=:uU0nuZNNPgilLlLX2n2r+sSE7+N6U4DukIj3rOLvzek=:,  unixsum=:AAE=:;p=1"
    assert parse_digest_header(value) == {"sha-256": HELLO_SHA256, "unixsum": b"\x00\x01"}


def test_parse_empty() -> None:
    assert parse_digest_header("") == {}


@pytest.mark.parametrize(
    "value",
    [
        "sha-256=uU0n",  # token, not a byte sequence
        "sha-256=:uU0n",  # unterminated
        "sha-256=:uU0*:",
        "sha-256",  # bare key is boolean true
        "sha-256=10",
        "sha-256=(:AAE=:)",  # inner list
        "SHA-256=:AAE=:",  # keys are lower case
        "sha-256=:AAE=:,",
        "sha-256=:AAE=: junk",
        "sha-256=:AAE=:é",
    ],
)
def test_parse_invalid(value: str) -> None:
    with pytest.raises(InvalidHeader, match="Content-Digest"):
        parse_digest_header(value, header="Content-Digest")


def test_parse_length_limit() -> None:
    with pytest.raises(InvalidHeader, match="longer than"):
        parse_digest_header("a=:AAAA:, " * 1000)


def test_sha256_from_digest_header() -> None:
    assert sha256_from_digest_header(build_repr_digest(HELLO_SHA256.hex())) == HELLO_SHA256
    assert sha256_from_digest_header("sha-512=:AAE=:") is None
    with pytest.raises(InvalidHeader, match="32 bytes"):
        sha256_from_digest_header("sha-256=:AAE=:")


def test_want_digest() -> None:
    assert parse_want_digest("sha-256=10, sha-512=3, md5=0") == {
        "sha-256": 10,
        "sha-512": 3,
        "md5": 0,
    }
    assert parse_want_digest("") == {}


@pytest.mark.parametrize(
    "value", ["sha-256", "sha-256=11", "sha-256=-1", "sha-256=1.5", "a=:AA==:"]
)
def test_want_digest_invalid(value: str) -> None:
    with pytest.raises(InvalidHeader, match="Want-Content-Digest"):
        parse_want_digest(value, header="Want-Content-Digest")


algorithm_keys = st.from_regex(r"[a-z*][a-z0-9_.*-]{0,15}", fullmatch=True)


@given(st.dictionaries(algorithm_keys, st.binary(max_size=80), min_size=1, max_size=5))
def test_round_trip(digests: dict[str, bytes]) -> None:
    assert parse_digest_header(build_digest_header(digests)) == digests


@given(st.binary(min_size=32, max_size=32))
def test_repr_digest_round_trip(digest: bytes) -> None:
    assert sha256_from_digest_header(build_repr_digest(digest.hex())) == digest


@given(st.text(max_size=200))
def test_parsers_never_raise_anything_else(value: str) -> None:
    for parse in (parse_digest_header, parse_want_digest, sha256_from_digest_header):
        with contextlib.suppress(FreightError):
            parse(value)


@given(st.from_regex(r"[a-z0-9=:,;*.+/ -]{0,60}", fullmatch=True))
def test_parsers_never_raise_anything_else_near_miss(value: str) -> None:
    for parse in (parse_digest_header, parse_want_digest):
        with contextlib.suppress(FreightError):
            parse(value)
