"""RangeSet against a reference model: a plain set of byte indices over small lengths."""

from __future__ import annotations

import random

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from freight.core.rangeset import RangeSet

LIMIT = 64

Span = tuple[int, int]


@st.composite
def spans(draw: st.DrawFn, limit: int = LIMIT) -> Span:
    start = draw(st.integers(0, limit))
    end = draw(st.integers(start, limit))
    return start, end


span_lists = st.lists(spans(), max_size=12)


def model_of(added: list[Span]) -> set[int]:
    covered: set[int] = set()
    for start, end in added:
        covered.update(range(start, end))
    return covered


def runs_of(covered: set[int]) -> list[Span]:
    """The maximal runs of ``covered``: what a merged RangeSet must hold."""
    runs: list[Span] = []
    for index in sorted(covered):
        if runs and runs[-1][1] == index:
            runs[-1] = (runs[-1][0], index + 1)
        else:
            runs.append((index, index + 1))
    return runs


def build(added: list[Span]) -> RangeSet:
    ranges = RangeSet()
    for start, end in added:
        ranges.add(start, end)
    return ranges


@given(span_lists)
def test_add_in_any_order_merges_into_maximal_runs(added: list[Span]) -> None:
    ranges = build(added)
    assert list(ranges) == runs_of(model_of(added))
    assert len(ranges) == len(runs_of(model_of(added)))


@given(span_lists, st.randoms(use_true_random=False))
def test_order_of_adds_does_not_matter(added: list[Span], rng: random.Random) -> None:
    shuffled = list(added)
    rng.shuffle(shuffled)
    assert build(shuffled) == build(added)
    assert RangeSet(added) == build(added)


@given(span_lists, span_lists)
def test_merging_two_sets_is_the_union(first: list[Span], second: list[Span]) -> None:
    merged = build(first)
    for start, end in build(second):
        merged.add(start, end)
    assert list(merged) == runs_of(model_of(first) | model_of(second))


@given(span_lists)
def test_contiguous_end_total_and_highest(added: list[Span]) -> None:
    covered = model_of(added)
    ranges = build(added)
    expected_end = 0
    while expected_end in covered:
        expected_end += 1
    assert ranges.contiguous_end() == expected_end
    assert ranges.total() == len(covered)
    assert ranges.highest() == (max(covered) + 1 if covered else 0)


@given(span_lists, st.integers(0, LIMIT + 8))
def test_missing_lists_the_gaps_below_length(added: list[Span], length: int) -> None:
    covered = model_of(added)
    gaps = build(added).missing(length)
    assert gaps == runs_of(set(range(length)) - covered)
    assert all(start < end for start, end in gaps)


@given(span_lists, spans(LIMIT + 8))
def test_covers_and_overlaps(added: list[Span], probe: Span) -> None:
    covered = model_of(added)
    start, end = probe
    ranges = build(added)
    wanted = set(range(start, end))
    # Empty probes are left out: covers(5, 5) and overlaps(5, 5) say whether 5 is inside.
    assume(start < end)
    assert ranges.covers(start, end) == wanted.issubset(covered)
    assert ranges.overlaps(start, end) == bool(wanted & covered)


@given(span_lists, st.integers(0, LIMIT + 8))
def test_end_of_run_from(added: list[Span], offset: int) -> None:
    covered = model_of(added)
    expected = offset
    while expected in covered:
        expected += 1
    assert build(added).end_of_run_from(offset) == expected


@given(span_lists)
def test_list_round_trip_and_copy_independence(added: list[Span]) -> None:
    ranges = build(added)
    assert RangeSet.from_list(ranges.to_list()) == ranges
    assert all(isinstance(pair, list) for pair in ranges.to_list())
    clone = ranges.copy()
    clone.add(LIMIT + 10, LIMIT + 11)
    assert clone != ranges
    assert list(ranges) == runs_of(model_of(added))


def test_empty_range_is_ignored_and_bad_ranges_refused() -> None:
    ranges = RangeSet()
    ranges.add(5, 5)
    assert list(ranges) == []
    assert ranges.contiguous_end() == 0
    assert ranges.missing(3) == [(0, 3)]
    with pytest.raises(ValueError):
        ranges.add(-1, 3)
    with pytest.raises(ValueError):
        ranges.add(4, 3)


def test_adjacent_ranges_merge() -> None:
    ranges = RangeSet([(10, 20), (0, 10)])
    assert list(ranges) == [(0, 20)]
    assert repr(ranges) == "RangeSet([(0, 20)])"
    assert ranges != [(0, 20)]
