"""``freight get`` against a file server the test controls: files that change between two
attempts, servers that ignore If-Range, lying digests and hostile file names."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from cli_support import FakeFile, FakeFileServer, MiB, json_output, run_cli

from freight.client.partfile import part_path
from freight.client.resume_store import DownloadKey, DownloadState, ResumeStore


def _seed_part(state_dir: Path, out: Path, url: str, content: bytes, etag: str, keep: int) -> Path:
    """A .part holding the first ``keep`` bytes of ``content``, as an interrupted run leaves."""
    part = part_path(out)
    part.write_bytes(content[:keep])
    ResumeStore(state_dir).put_download(
        DownloadKey.for_part(part, url), DownloadState(etag=etag, size=len(content))
    )
    return part


def test_a_partial_download_resumes_with_range_and_if_range(
    fake_files: FakeFileServer, tmp_path: Path, env: dict[str, str], state_dir: Path
) -> None:
    content = os.urandom(4 * MiB + 7)
    fake_files.files["a"] = FakeFile(content, etag='"v1"')
    url = fake_files.url("a")
    out = tmp_path / "out.bin"
    _seed_part(state_dir, out, url, content, '"v1"', keep=MiB + 3)
    result = json_output(run_cli("get", url, "-o", str(out), "--json", env=env))
    assert result["resumed_from"] == MiB + 3 and result["restarted"] is False
    assert out.read_bytes() == content
    [request] = fake_files.files["a"].gets
    assert request["Range"] == f"bytes={MiB + 3}-" and request["If-Range"] == '"v1"'


@pytest.mark.parametrize("honour_if_range", [True, False], ids=["200", "206-other-etag"])
def test_a_changed_file_is_downloaded_again_from_the_start(
    honour_if_range: bool,
    fake_files: FakeFileServer,
    tmp_path: Path,
    env: dict[str, str],
    state_dir: Path,
) -> None:
    old, new = os.urandom(3 * MiB), os.urandom(3 * MiB + 11)
    fake_files.files["a"] = FakeFile(new, etag='"v2"', honour_if_range=honour_if_range)
    url = fake_files.url("a")
    out = tmp_path / "out.bin"
    _seed_part(state_dir, out, url, old, '"v1"', keep=2 * MiB)
    result = json_output(run_cli("get", url, "-o", str(out), "--json", env=env))
    assert result["restarted"] is True and result["resumed_from"] == 0
    assert out.read_bytes() == new  # never old bytes spliced onto new ones
    assert result["sha256"] == hashlib.sha256(new).hexdigest()
    assert fake_files.files["a"].gets[0]["If-Range"] == '"v1"'
    assert "Range" not in fake_files.files["a"].gets[-1]


def test_a_digest_mismatch_fails_and_leaves_no_file(
    fake_files: FakeFileServer, tmp_path: Path, env: dict[str, str], state_dir: Path
) -> None:
    fake_files.files["a"] = FakeFile(os.urandom(MiB), etag='"v1"', digest=bytes(32))
    out = tmp_path / "out.bin"
    done = run_cli("get", fake_files.url("a"), "-o", str(out), env=env)
    assert done.returncode == 1
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("Error: SHA-256 mismatch")
    assert not out.exists() and not part_path(out).exists()
    assert json.loads((state_dir / "downloads.json").read_text())["entries"] == []


@pytest.mark.parametrize(
    ("suggested", "saved"),
    [
        ("../../etc/passwd", "passwd"),
        ("..\\\\windows\\\\evil.exe", "evil.exe"),
        (".bashrc", "bashrc"),
        ("..", "a1"),  # nothing usable is left: the file id
        ("r\u202egnp.exe", "rgnp.exe"),  # a bidi override would disguise the extension
    ],
)
def test_server_file_names_are_sanitised(
    suggested: str, saved: str, fake_files: FakeFileServer, tmp_path: Path, env: dict[str, str]
) -> None:
    fake_files.files["a1"] = FakeFile(b"payload", etag='"v1"', name=suggested)
    workdir = tmp_path / "work"
    workdir.mkdir()
    result = json_output(run_cli("get", fake_files.url("a1"), "--json", env=env, cwd=workdir))
    assert Path(result["path"]).name == saved
    assert [p.name for p in workdir.iterdir()] == [saved]
    assert (workdir / saved).read_bytes() == b"payload"


def test_output_directory_gets_the_server_name(
    fake_files: FakeFileServer, tmp_path: Path, env: dict[str, str]
) -> None:
    fake_files.files["a"] = FakeFile(b"payload", etag='"v1"', name="report.pdf")
    result = json_output(
        run_cli("get", fake_files.url("a"), "-o", str(tmp_path), "--json", env=env)
    )
    assert result["path"] == str(tmp_path / "report.pdf")
    again = run_cli("get", fake_files.url("a"), "-o", str(tmp_path), env=env)
    assert again.returncode == 1 and "already exists" in again.stderr
    forced = run_cli("get", fake_files.url("a"), "-o", str(tmp_path), "--force", env=env)
    assert forced.returncode == 0, forced.stderr
