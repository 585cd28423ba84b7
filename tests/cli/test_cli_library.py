"""The client library called directly (no CLI): callbacks, stall detection, resume store."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from cli_support import ChaosProxy, MiB, _Rule, make_file, sha256_of

from freight.client import (
    ResumeStore,
    RetryNotice,
    RetryPolicy,
    Timeouts,
    download_file,
    list_files,
    upload_file,
)
from freight.client.options import TransferOptions


async def test_callbacks_report_start_and_absolute_progress(
    freight_server: Any, tmp_path: Path
) -> None:
    source = tmp_path / "a.bin"
    digest = make_file(source, 5 * MiB + 1)
    starts: list[tuple[int, int]] = []
    seen: list[int] = []
    result = await upload_file(
        source,
        freight_server.url,
        TransferOptions(progress=seen.append, resume_store=ResumeStore(tmp_path / "state")),
        on_start=lambda size, offset: starts.append((size, offset)),
    )
    assert result.sha256 == digest and result.verified
    assert starts == [(5 * MiB + 1, 0)]
    assert seen[0] == 0 and seen[-1] == 5 * MiB + 1 and seen == sorted(seen)
    assert len(seen) >= 6  # about one report per MiB

    got: list[int] = []
    downloaded = await download_file(
        result.url, tmp_path / "b.bin", TransferOptions(progress=got.append)
    )
    assert downloaded.sha256 == digest and sha256_of(tmp_path / "b.bin") == digest
    assert got[-1] == 5 * MiB + 1 and got == sorted(got)
    [listed] = await list_files(freight_server.url)
    assert listed.sha256 == digest and listed.url == result.url


async def test_a_stalled_body_write_times_out_and_is_retried(
    freight_server: Any, chaos_proxy: Callable[[int], ChaosProxy], tmp_path: Path
) -> None:
    source = tmp_path / "a.bin"
    digest = make_file(source, 48 * MiB)
    proxy = chaos_proxy(freight_server.port)
    # The link stops taking bytes (no reset, no error): only a stall timer can notice.
    proxy.reset(up=_Rule(freeze_after=8 * MiB, freeze_seconds=3.0))
    notices: list[RetryNotice] = []
    result = await upload_file(
        source,
        proxy.url,
        TransferOptions(
            timeouts=Timeouts(read=1.0, stall=1.0),
            retry=RetryPolicy(attempts=10, initial_delay=0.2, max_delay=1.0),
            on_retry=notices.append,
        ),
    )
    assert result.sha256 == digest and result.verified
    assert "timed out" in notices[0].reason
