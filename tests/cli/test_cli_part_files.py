"""``freight get`` never clobbers or writes through a file it did not create.

The part file is ``.<NAME prefix>.<hash>.freight-part``: it fits 255 bytes whatever NAME's
length, and a link, special file, hard link or stranger's file at that path is refused.
HTTP and TCP downloads share that lifecycle; both are run against a real server.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest
from cli_support import FakeFile, FakeFileServer, json_output, run_cli

from freight.client import upload_file

CONTENT = os.urandom(300_000)
TCP_LINE = re.compile(r"tcp listening on tcp://[^\s:]+:(\d+)")


def _tcp_port(server: Any) -> int:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for line in list(server.output_tail):
            if match := TCP_LINE.search(line):
                return int(match.group(1))
        time.sleep(0.02)
    raise AssertionError("no TCP port")


@pytest.fixture
def stored(tmp_path: Path, server_factory: Any) -> dict[str, str]:
    """A real server holding one file; its HTTP and TCP URLs."""
    server = server_factory(data_dir=tmp_path / "data", args=["--tcp-port", "0"]).start()
    source = tmp_path / "src" / "doc.bin"
    source.parent.mkdir()
    source.write_bytes(CONTENT)
    url = asyncio.run(upload_file(source, server.url)).url
    file_id = url.rstrip("/").rsplit("/", 1)[-1]
    return {"http": url, "tcp": f"tcp://127.0.0.1:{_tcp_port(server)}/{file_id}"}


def _part(target: Path) -> Path:
    from freight.client.partfile import part_path

    return part_path(target)


@pytest.mark.parametrize("protocol", ["http", "tcp"])
def test_an_existing_name_part_is_left_alone(
    protocol: str, stored: dict[str, str], tmp_path: Path, env: dict[str, str]
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    mine = work / "out.bin.part"
    mine.write_bytes(b"my own notes, not a download")
    done = run_cli("get", stored[protocol], "-o", str(work / "out.bin"), "--json", env=env)
    assert json_output(done)["size"] == len(CONTENT)
    assert mine.read_bytes() == b"my own notes, not a download"
    assert (work / "out.bin").read_bytes() == CONTENT


@pytest.mark.parametrize("protocol", ["http", "tcp"])
def test_a_part_symlink_is_never_followed(
    protocol: str, stored: dict[str, str], tmp_path: Path, env: dict[str, str]
) -> None:
    work, outside = tmp_path / "work", tmp_path / "outside.txt"
    work.mkdir()
    outside.write_bytes(b"precious")
    target = work / "out.bin"
    # Where the old client put its part, and where this one does.
    (work / "out.bin.part").symlink_to(outside)
    _part(target).symlink_to(outside)
    done = run_cli("get", stored[protocol], "-o", str(target), env=env)
    assert outside.read_bytes() == b"precious"
    assert done.returncode == 1 and "symbolic link" in done.stderr
    assert not target.exists()


def test_a_hard_linked_or_special_part_is_refused(
    stored: dict[str, str], tmp_path: Path, env: dict[str, str]
) -> None:
    work, outside = tmp_path / "work", tmp_path / "outside.txt"
    work.mkdir()
    outside.write_bytes(b"precious")
    target = work / "out.bin"
    os.link(outside, _part(target))
    done = run_cli("get", stored["http"], "-o", str(target), env=env)
    assert done.returncode == 1 and "remove it" in done.stderr
    assert outside.read_bytes() == b"precious"
    _part(target).unlink()
    os.mkfifo(_part(target))
    done = run_cli("get", stored["tcp"], "-o", str(target), env=env, timeout=30)
    assert done.returncode == 1 and "remove it" in done.stderr


@pytest.mark.parametrize("protocol", ["http", "tcp"])
def test_names_of_255_bytes_can_be_downloaded(
    protocol: str, stored: dict[str, str], tmp_path: Path, env: dict[str, str]
) -> None:
    target = tmp_path / ("é" * 126 + "abc")  # 255 bytes in UTF-8
    assert len(os.fsencode(target.name)) == 255
    done = run_cli("get", stored[protocol], "-o", str(target), "--json", env=env)
    assert json_output(done)["size"] == len(CONTENT)
    assert target.read_bytes() == CONTENT
    assert len(os.fsencode(_part(target).name)) <= 255
    assert _part(target).name.endswith(".freight-part")


@pytest.mark.parametrize(
    "hostile", ["../../escape.bin", "..", "/etc/passwd", " . . ", "sub/dir\\x.bin"]
)
def test_a_server_name_never_leaves_the_directory(
    hostile: str, fake_files: FakeFileServer, tmp_path: Path, env: dict[str, str]
) -> None:
    fake_files.files["f"] = FakeFile(content=b"payload", etag='"1"', name=hostile)
    work = tmp_path / "deep" / "work"
    work.mkdir(parents=True)
    done = run_cli("get", fake_files.url("f"), "--json", env=env, cwd=work)
    saved = Path(json_output(done)["path"])
    assert saved.parent == work and saved.read_bytes() == b"payload"
    assert saved.name not in ("", ".", "..") and "\x1b" not in saved.name
