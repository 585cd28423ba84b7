"""SIGKILL the server in the middle of an upload: what it reports afterwards is on disk.

After a restart on the same data directory, the tus offset must never cover a byte that
differs from what the client sent (checked by hashing the part file's prefix), must not be
less than what was acknowledged before the crash, and ``freight send`` must take the upload
from there to a file whose SHA-256 matches the local one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .helpers import (
    MiB,
    PatternStream,
    create_upload,
    download,
    free_port,
    head_offset,
    patch_stream,
    repr_digest_hex,
    sha256_of_file,
)

SIZE = 256 * MiB
FIRST_PATCH = 16 * MiB  # acknowledged by a completed PATCH before the crash
KILL_AT = 136 * MiB  # total bytes handed to the socket when the server is killed
CLI_TIMEOUT = 90.0


class _ServerKilled(Exception):
    """Stops the sending loop once the server has been killed."""


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


def part_file(data_dir: Path, upload_url: str) -> Path:
    return data_dir / "uploads" / f"{upload_url.rstrip('/').rsplit('/', 1)[-1]}.part"


def assert_offset_is_durable(data_dir: Path, upload_url: str, source: PatternStream) -> int:
    """HEAD the upload; the part file's bytes up to that offset must be the source's."""
    offset = head_offset(upload_url)
    part = part_file(data_dir, upload_url)
    assert part.stat().st_size >= offset
    assert sha256_of_file(part, offset) == source.sha256(offset), (
        f"the server reports offset {offset} but its part file differs from what was sent"
    )
    return offset


def start_server(factory: Any, data_dir: Path, port: int, fsync: str) -> Any:
    return factory(data_dir=data_dir, port=port, args=["--fsync", fsync]).start()


def remember_upload(state_dir: Path, path: Path, endpoint: str, upload_url: str) -> None:
    """Write the CLI's resume store (format documented in freight.client.resume_store)."""
    stat = path.resolve().stat()
    entry = {
        "path": str(path.resolve()),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "server": endpoint,
        "upload_url": upload_url,
        "updated": time.time(),
    }
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    (state_dir / "uploads.json").write_text(json.dumps({"version": 1, "entries": [entry]}))


def remembered_upload(state_dir: Path) -> str | None:
    try:
        entries = json.loads((state_dir / "uploads.json").read_text())["entries"]
    except (OSError, ValueError, KeyError):
        return None
    return str(entries[0]["upload_url"]) if entries else None


def freight_send(path: Path, endpoint: str, state_dir: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "FREIGHT_STATE_DIR": str(state_dir)}
    return subprocess.Popen(
        [sys.executable, "-m", "freight", "send", str(path), endpoint, "--json", "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def finish_cli(cli: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = cli.communicate(timeout=CLI_TIMEOUT)
    assert cli.returncode == 0, f"freight send failed ({cli.returncode}): {err}"
    result: dict[str, Any] = json.loads(out)
    return result


def assert_stored(upload_url: str, source: PatternStream) -> None:
    reply = download(upload_url)
    assert reply.status == 200
    assert reply.size == source.size
    assert reply.sha256 == source.sha256()
    assert repr_digest_hex(reply.header("Repr-Digest")) == reply.sha256


def stream_until_killed(
    server: Any, upload_url: str, source: PatternStream, start: int
) -> tuple[int, int]:
    """PATCH from ``start``; at :data:`KILL_AT` wait for an acknowledged offset, then SIGKILL.

    Returns the offset a HEAD acknowledged just before the kill and how far the client got.
    """
    killed_at: list[tuple[int, int]] = []

    def on_sent(sent: int) -> None:
        if start + sent < KILL_AT:
            return
        # Sending pauses here; a checkpoint past ``start`` must become visible.
        acknowledged = wait_for(
            lambda: (offset := head_offset(upload_url)) > start and offset,
            "a checkpoint after the first batch",
        )
        server.kill()
        killed_at.append((acknowledged, start + sent))
        raise _ServerKilled

    with pytest.raises(_ServerKilled):
        patch_stream(upload_url, start, source.chunks(start), SIZE - start, on_sent=on_sent)
    return killed_at[0]


@pytest.mark.parametrize("fsync", ["batch", "never"])
def test_sigkill_mid_patch_then_cli_resumes(
    server_factory: Any, tmp_path: Path, fsync: str
) -> None:
    """SIGKILL mid-PATCH, restart, check the offset against the part file, resume with the CLI.

    With ``never`` nothing is synced, yet a process crash (not a power cut) loses nothing
    acknowledged: the page cache outlives the process."""
    port = free_port()
    data_dir = tmp_path / "data"
    server = start_server(server_factory, data_dir, port, fsync)
    source = PatternStream(SIZE, seed=1)
    local = source.write_to(tmp_path / "source.bin")
    upload_url = create_upload(server.url, SIZE, {"filename": local.name})

    first = patch_stream(upload_url, 0, source.chunks(0, FIRST_PATCH), FIRST_PATCH)
    assert first.status == 204
    assert first.header("Upload-Offset") == str(FIRST_PATCH)
    acknowledged, sent = stream_until_killed(server, upload_url, source, FIRST_PATCH)

    server = start_server(server_factory, data_dir, port, fsync)
    offset = assert_offset_is_durable(data_dir, upload_url, source)
    print(f"fsync={fsync}: acknowledged {acknowledged}, sent {sent}, offset after restart {offset}")
    assert acknowledged <= offset <= sent

    state_dir = tmp_path / "state"
    endpoint = f"{server.url}/files/"
    remember_upload(state_dir, local, endpoint, upload_url)
    result = finish_cli(freight_send(local, endpoint, state_dir))
    assert result["resumed_from"] == offset, "the CLI should resume the remembered upload"
    assert result["url"] == upload_url
    assert result["sha256"] == source.sha256()
    assert result["verified"] is True
    assert_stored(upload_url, source)
    assert remembered_upload(state_dir) is None, "a finished upload is forgotten"


def test_cli_send_rides_out_a_server_sigkill(server_factory: Any, tmp_path: Path) -> None:
    """``freight send`` keeps retrying while the server is down and resumes after a restart."""
    port = free_port()
    data_dir = tmp_path / "data"
    server = start_server(server_factory, data_dir, port, "batch")
    source = PatternStream(SIZE, seed=2)
    local = source.write_to(tmp_path / "source.bin")
    state_dir = tmp_path / "state"
    endpoint = f"{server.url}/files/"

    cli = freight_send(local, endpoint, state_dir)
    try:
        upload_url = wait_for(lambda: remembered_upload(state_dir), "the CLI to create an upload")
        # Freeze the CLI once the first batch is durable, so the crash lands mid-body.
        wait_for(lambda: head_offset(upload_url), "the first durable batch")
        os.kill(cli.pid, signal.SIGSTOP)
        acknowledged = head_offset(upload_url)
        assert cli.poll() is None and acknowledged < SIZE, "the upload ended before the crash"
        server.kill()

        server = start_server(server_factory, data_dir, port, "batch")
        offset = assert_offset_is_durable(data_dir, upload_url, source)
        print(f"CLI crash: acknowledged {acknowledged}, offset after restart {offset}")
        assert acknowledged <= offset < SIZE
        os.kill(cli.pid, signal.SIGCONT)
        result = finish_cli(cli)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
    assert result["url"] == upload_url, "the CLI should resume its upload, not start another"
    assert result["sha256"] == source.sha256()
    assert result["verified"] is True
    assert_stored(upload_url, source)
