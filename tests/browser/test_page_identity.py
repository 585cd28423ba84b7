"""The page's file identity and type filter, run in Chromium and checked against Python."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import pytest

pytestmark = pytest.mark.timeout(60)

MiB = 1024 * 1024
SIZES = [0, 1, MiB - 1, MiB, MiB + 1, 2 * MiB - 1, 2 * MiB, 2 * MiB + 1, 3 * MiB + 12_345]


def pattern(size: int) -> bytes:
    """The bytes the JavaScript side makes: ``i * 31 + (i >> 12)``, low byte."""
    return bytes((i * 31 + (i >> 12)) & 255 for i in range(size))


def test_the_fingerprint_is_the_sha256_of_the_first_and_last_mib(
    freight_server: Any, browser_page: Callable[..., Any]
) -> None:
    page = browser_page(freight_server)
    got = page.page.evaluate(
        """async (sizes) => {
            const { fingerprint } = await import('/static/identity.js');
            const out = [];
            for (const n of sizes) {
                const data = Uint8Array.from({ length: n }, (_, i) => (i * 31 + (i >> 12)) & 255);
                out.push(await fingerprint(new File([data], 'x.bin')));
            }
            return out;
        }""",
        SIZES,
    )
    for size, digest in zip(SIZES, got, strict=True):
        data = pattern(size)
        expected = data if size <= 2 * MiB else data[:MiB] + data[-MiB:]
        assert digest == hashlib.sha256(expected).hexdigest(), f"size {size}"


def test_the_accept_list_matches_extensions_and_types(
    freight_server: Any, browser_page: Callable[..., Any]
) -> None:
    page = browser_page(freight_server)
    got = page.page.evaluate(
        """async () => {
            const { accepts } = await import('/static/restrictions.js');
            const f = (name, type) => new File([], name, { type });
            const list = ['.jpg', 'image/*', 'application/pdf'];
            return [
                accepts(f('a.JPG', ''), list),
                accepts(f('a.png', 'image/png'), list),
                accepts(f('a.pdf', 'application/pdf'), list),
                accepts(f('a.bin', 'application/octet-stream'), list),
                accepts(f('jpg', ''), list),
                accepts(f('a.bin', ''), []),
            ];
        }"""
    )
    assert got == [True, True, True, False, False, True]
