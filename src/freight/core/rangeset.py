"""A set of byte ranges, kept sorted and merged: what an upload has received."""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator

__all__ = ["RangeSet"]


class RangeSet:
    """Disjoint, non-adjacent half-open ranges ``[start, end)`` in ascending order."""

    __slots__ = ("_ranges",)

    def __init__(self, ranges: Iterable[tuple[int, int]] = ()) -> None:
        self._ranges: list[tuple[int, int]] = []
        for start, end in ranges:
            self.add(start, end)

    def add(self, start: int, end: int) -> None:
        """Mark ``[start, end)`` as received, merging with touching neighbours."""
        if start < 0 or end < start:
            raise ValueError(f"bad range [{start}, {end})")
        if start == end:
            return
        starts = [r[0] for r in self._ranges]
        lo = bisect.bisect_left(starts, start)
        # Step back one when the previous range touches or overlaps the new one.
        if lo > 0 and self._ranges[lo - 1][1] >= start:
            lo -= 1
        hi = lo
        while hi < len(self._ranges) and self._ranges[hi][0] <= end:
            start = min(start, self._ranges[hi][0])
            end = max(end, self._ranges[hi][1])
            hi += 1
        self._ranges[lo:hi] = [(start, end)]

    def contiguous_end(self) -> int:
        """End of the run that starts at byte 0 (0 when byte 0 is missing)."""
        if self._ranges and self._ranges[0][0] == 0:
            return self._ranges[0][1]
        return 0

    def end_of_run_from(self, offset: int) -> int:
        """End of the received run containing ``offset`` (``offset`` itself if not received)."""
        for start, end in self._ranges:
            if start <= offset < end:
                return end
        return offset

    def covers(self, start: int, end: int) -> bool:
        return any(s <= start and end <= e for s, e in self._ranges)

    def overlaps(self, start: int, end: int) -> bool:
        return any(s < end and start < e for s, e in self._ranges)

    def total(self) -> int:
        return sum(end - start for start, end in self._ranges)

    def highest(self) -> int:
        return self._ranges[-1][1] if self._ranges else 0

    def missing(self, length: int) -> list[tuple[int, int]]:
        """The gaps in ``[0, length)``."""
        gaps: list[tuple[int, int]] = []
        cursor = 0
        for start, end in self._ranges:
            if start > cursor:
                gaps.append((cursor, min(start, length)))
            cursor = max(cursor, end)
            if cursor >= length:
                break
        if cursor < length:
            gaps.append((cursor, length))
        return [(s, e) for s, e in gaps if s < e]

    def copy(self) -> RangeSet:
        clone = RangeSet()
        clone._ranges = list(self._ranges)
        return clone

    def to_list(self) -> list[list[int]]:
        return [[start, end] for start, end in self._ranges]

    @classmethod
    def from_list(cls, ranges: Iterable[Iterable[int]]) -> RangeSet:
        result = cls()
        for pair in ranges:
            start, end = pair
            result.add(int(start), int(end))
        return result

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(self._ranges)

    def __len__(self) -> int:
        return len(self._ranges)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RangeSet) and self._ranges == other._ranges

    def __repr__(self) -> str:
        return f"RangeSet({self._ranges!r})"
