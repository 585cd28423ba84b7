"""``send -`` from stdin (tus, deferred length) and ``get -o -`` to stdout, whole even when
the link is cut midway."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cli_support import FREIGHT, ChaosProxy, MiB, _Rule, json_output, make_file, run_cli


def _send_stdin(path: Path, url: str, env: dict[str, str], *extra: str) -> Any:
    with path.open("rb") as stdin:
        return subprocess.run(
            [*FREIGHT, "send", "-", url, *extra],
            stdin=stdin, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip


def test_stdin_is_sent_with_its_length_declared_at_the_end(
    freight_server: Any, tmp_path: Path, env: dict[str, str]
) -> None:
    source = tmp_path / "src.bin"
    digest = make_file(source, 20 * MiB + 12345)  # several pieces, the last one short
    done = _send_stdin(source, freight_server.url, env, "--name", "piped.bin", "--json")
    report = json_output(done)
    assert (report["name"], report["size"], report["sha256"]) == (
        "piped.bin",
        20 * MiB + 12345,
        digest,
    )
    assert report["verified"] is True
    listed = json_output(run_cli("ls", freight_server.url, "--json", env=env))["files"]
    assert [(f["name"], f["sha256"]) for f in listed] == [("piped.bin", digest)]


def test_an_empty_stream_and_a_stream_of_whole_pieces(
    freight_server: Any, tmp_path: Path, env: dict[str, str]
) -> None:
    for size in (0, 8 * MiB):
        source = tmp_path / f"{size}.bin"
        digest = make_file(source, size)
        done = _send_stdin(source, freight_server.url, env, "--name", f"{size}.bin", "--json")
        assert json_output(done)["sha256"] == digest


def test_a_stream_cut_midway_resumes_from_the_server_offset(
    freight_server: Any,
    tmp_path: Path,
    env: dict[str, str],
    chaos_proxy: Callable[[int], ChaosProxy],
) -> None:
    source = tmp_path / "src.bin"
    digest = make_file(source, 24 * MiB)
    proxy = chaos_proxy(freight_server.port)
    proxy.reset(up=_Rule(cut_after=13 * MiB))
    done = _send_stdin(source, proxy.url, env, "--name", "cut.bin", "--json")
    report = json_output(done)
    assert report["sha256"] == digest and report["size"] == 24 * MiB
    assert "retrying in" in done.stderr
    # Only the piece in flight went again: at most one piece (8 MiB) more than the file.
    assert proxy.counted["up"] < 24 * MiB + 8 * MiB + MiB


def test_stream_needs_a_name_and_tus(tmp_path: Path, env: dict[str, str]) -> None:
    source = tmp_path / "src.bin"
    make_file(source, 10)
    for extra, says in (
        ((), "--name"),
        (("--name", "x", "--protocol", "ws"), "tus only"),
    ):
        done = _send_stdin(source, "http://127.0.0.1:1", env, *extra)
        assert done.returncode == 2 and says in done.stderr


def test_get_to_stdout(
    freight_server: Any,
    tmp_path: Path,
    env: dict[str, str],
    chaos_proxy: Callable[[int], ChaosProxy],
) -> None:
    source = tmp_path / "src.bin"
    digest = make_file(source, 20 * MiB)
    url = json_output(run_cli("send", str(source), freight_server.url, "--json", env=env))["url"]
    work = tmp_path / "work"
    work.mkdir()
    proxy = chaos_proxy(freight_server.port)
    proxy.reset(down=_Rule(cut_after=9 * MiB))
    done = subprocess.run(
        [*FREIGHT, "get", url.replace(freight_server.url, proxy.url), "-o", "-"],
        env=env, cwd=work, capture_output=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert hashlib.sha256(done.stdout).hexdigest() == digest
    assert b"retrying in" in done.stderr and b"stdout" in done.stderr
    assert os.listdir(work) == []  # no file named "-", no part file
    refused = run_cli("get", url, "-o", "-", "--json", env=env)
    assert refused.returncode == 2 and "--json" in refused.stderr
