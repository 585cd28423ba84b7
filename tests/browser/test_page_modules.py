"""The page's pure JavaScript pieces, run in Chromium and checked against Python's answers."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import pytest

pytestmark = pytest.mark.timeout(60)


def pattern(size: int) -> bytes:
    """The same bytes the JavaScript side makes with ``(i * 7 + (i >> 8)) & 255``."""
    return bytes((i * 7 + (i >> 8)) & 255 for i in range(size))


SIZES = [0, 1, 55, 56, 63, 64, 65, 119, 120, 128, 1000, 70_001]


def test_incremental_sha256_matches_hashlib_in_any_pieces_and_across_a_saved_state(
    freight_server: Any, browser_page: Callable[..., Any]
) -> None:
    page = browser_page(freight_server)
    results = page.page.evaluate(
        """async (sizes) => {
            const { Sha256 } = await import('/static/sha256.js');
            const make = (n) => Uint8Array.from({ length: n }, (_, i) => (i * 7 + (i >> 8)) & 255);
            const out = [];
            for (const n of sizes) {
                const data = make(n);
                const whole = new Sha256().update(data).hexDigest();
                // Odd piece sizes, then a save and restore at the first 64-byte boundary.
                const pieces = new Sha256();
                let at = 0, step = 1;
                while (at < n) {
                    pieces.update(data.subarray(at, at + step));
                    at += step;
                    step = (step * 3) % 97 + 1;
                }
                const cut = Math.floor(n / 128) * 64;
                const first = new Sha256().update(data.subarray(0, cut));
                const saved = JSON.parse(JSON.stringify(first.saveState()));
                const resumed = new Sha256(saved).update(data.subarray(cut)).hexDigest();
                out.push([whole, pieces.hexDigest(), resumed]);
            }
            return out;
        }""",
        SIZES,
    )
    for size, digests in zip(SIZES, results, strict=True):
        expected = hashlib.sha256(pattern(size)).hexdigest()
        assert digests == [expected] * 3, f"size {size}"


def test_the_event_stream_parser_gives_the_same_events_wherever_the_stream_is_split(
    freight_server: Any, browser_page: Callable[..., Any]
) -> None:
    stream = (
        "retry: 3000\r\n\r\n: keepalive\n\n"
        'event: snapshot\ndata: {"uploads": []}\n\n'
        'event: progress\r\ndata: {"id": "a",\r\ndata:  "n": 1}\r\n\r\n'
        "data: no event name\rid: 7\r\r\n"
    )
    outcomes = page_eval_split(browser_page(freight_server), stream)
    expected = [
        {"event": "snapshot", "data": '{"uploads": []}', "id": None},
        {"event": "progress", "data": '{"id": "a",\n "n": 1}', "id": None},
        {"event": "message", "data": "no event name", "id": "7"},
    ]
    assert all(events == expected for events in outcomes), outcomes[:3]


def page_eval_split(page: Any, stream: str) -> list[list[dict[str, Any]]]:
    """Parse ``stream`` fed in two pieces, for every split point."""
    result: list[list[dict[str, Any]]] = page.page.evaluate(
        """async (stream) => {
            const { SseParser } = await import('/static/events.js');
            const out = [];
            for (let cut = 0; cut <= stream.length; cut++) {
                const parser = new SseParser();
                out.push([...parser.feed(stream.slice(0, cut)), ...parser.feed(stream.slice(cut))]);
            }
            return out;
        }""",
        stream,
    )
    assert len(result) == len(stream) + 1
    return result


def test_missing_ranges_are_half_open_and_backoff_grows_to_a_cap(
    freight_server: Any, browser_page: Callable[..., Any]
) -> None:
    page = browser_page(freight_server)
    got = page.page.evaluate(
        """async () => {
            const { expandRanges } = await import('/static/transport-chunks.js');
            const { backoffMs } = await import('/static/uploader.js');
            return {
                chunks: expandRanges([[0, 2], [5, 6], [9, 99]], 11),
                backoff: [1, 2, 3, 6, 20].map((n) => backoffMs(n)),
            };
        }"""
    )
    assert got["chunks"] == [0, 1, 5, 9, 10]
    caps = [1000, 2000, 4000, 32000, 30000]
    for delay, cap in zip(got["backoff"], caps, strict=True):
        assert min(cap, 30000) / 2 <= delay <= min(cap, 30000)
