"""One stall costs one retry: the retry takes the stalled request over on the server."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from cli_support import ChaosProxy, MiB, _Rule, make_file

from freight.client import RetryNotice, RetryPolicy, Timeouts, upload_file
from freight.client.options import TransferOptions


async def test_a_stall_and_one_retry_finish_the_upload(
    freight_server: Any, chaos_proxy: Callable[[int], ChaosProxy], tmp_path: Path
) -> None:
    """What ``freight send --retries 1`` does, with a stall timer short enough for a test."""
    source = tmp_path / "a.bin"
    digest = make_file(source, 40 * MiB)
    proxy = chaos_proxy(freight_server.port)
    # The link stops taking bytes and stays open: the server goes on waiting for the rest
    # of the first PATCH (with bytes in its file it has not recorded yet) while the client
    # gives up on it, asks where the upload stands and sends again from there.
    proxy.reset(up=_Rule(freeze_after=12 * MiB, freeze_seconds=8.0))
    notices: list[RetryNotice] = []
    result = await upload_file(
        source,
        proxy.url,
        TransferOptions(
            timeouts=Timeouts(read=1.0, stall=1.0),
            retry=RetryPolicy(attempts=1, initial_delay=0.2),
            on_retry=notices.append,
        ),
    )
    assert result.sha256 == digest and result.verified
    assert [n.attempt for n in notices] == [1] and "timed out" in notices[0].reason
    # The retry did meet the stalled request (the server logs each take-over).
    assert "takes over" in "".join(freight_server.output_tail)
