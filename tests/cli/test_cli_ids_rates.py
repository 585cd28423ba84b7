"""Pure pieces of the CLI work: short ids and their prefixes, rate strings, binary sizes."""

from __future__ import annotations

import pytest

from freight.cli.columns import human_size
from freight.client.errors import ClientError
from freight.client.file_ids import AmbiguousId, match_prefix, short_ids
from freight.client.rate import parse_rate


def test_short_ids_are_unique_prefixes_of_at_least_eight() -> None:
    ids = ["abcdefghXYZ", "abcdefghXYQ", "zzzzzzzzzzzz", "abc"]
    short = short_ids(ids)
    assert short == {
        "abcdefghXYZ": "abcdefghXYZ",
        "abcdefghXYQ": "abcdefghXYQ",
        "zzzzzzzzzzzz": "zzzzzzzz",
        "abc": "abc",
    }
    assert short_ids(["abcdefghij1", "abcdefghik2"]) == {
        "abcdefghij1": "abcdefghij",
        "abcdefghik2": "abcdefghik",
    }


def test_a_prefix_names_one_id_or_says_which() -> None:
    ids = ["abc111", "abc222", "xyz"]
    assert match_prefix("abc1", ids) == "abc111"
    assert match_prefix("xyz", ids) == "xyz"
    assert match_prefix("nope", ids) is None
    with pytest.raises(AmbiguousId, match="abc111, abc222"):
        match_prefix("abc", ids)
    assert match_prefix("abc", ["abc", "abcd"]) == "abc"  # a whole id wins


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("10M", 10 * 1024**2),
        ("512k", 512 * 1024),
        ("1.5MiB", 1.5 * 1024**2),
        ("2G/s", 2 * 1024**3),
        ("1000000", 1_000_000),
        (" 3 MB ", 3 * 1024**2),
    ],
)
def test_rates(text: str, rate: float) -> None:
    assert parse_rate(text) == rate


@pytest.mark.parametrize("bad", ["", "fast", "-1M", "0", "1X", "0.5"])
def test_bad_rates(bad: str) -> None:
    with pytest.raises(ClientError):
        parse_rate(bad)


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0 bytes"),
        (1, "1 byte"),
        (1023, "1023 bytes"),
        (1024, "1.0 KiB"),
        (314572800, "300.0 MiB"),
        (3 * 1024**3, "3.0 GiB"),
    ],
)
def test_sizes_are_binary(size: int, text: str) -> None:
    assert human_size(size) == text
