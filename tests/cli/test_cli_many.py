"""``freight send`` of many files and directory trees, skipping what the server has, and the
ids ``ls`` shows being what ``get`` and ``rm`` take."""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from cli_support import (
    MiB,
    json_output,
    make_file,
    run_cli,
    sha256_of,
    stored_files,
    tcp_url,
    tus_metadata,
)


def _tree(root: Path) -> dict[str, str]:
    """photos/{a.bin, 2024/b.bin, 2024/skip.tmp, .cache/c.bin} and notes.txt; digests."""
    (root / "photos" / "2024").mkdir(parents=True)
    (root / "photos" / ".cache").mkdir()
    digests = {
        "photos/a.bin": make_file(root / "photos" / "a.bin", 300_000),
        "photos/2024/b.bin": make_file(root / "photos" / "2024" / "b.bin", 2 * MiB + 7),
        "notes.txt": make_file(root / "notes.txt", 1000),
    }
    make_file(root / "photos" / "2024" / "skip.tmp", 10)
    make_file(root / "photos" / ".cache" / "c.bin", 10)
    return digests


def test_many_files_and_a_tree_with_excludes(
    freight_server: Any, tmp_path: Path, env: dict[str, str]
) -> None:
    digests = _tree(tmp_path)
    done = run_cli(
        "send", "photos", "notes.txt", freight_server.url,
        "--exclude", "*.tmp", "--exclude", ".cache", "--transfers", "3", "--json",
        env=env, cwd=tmp_path,
    )  # fmt: skip
    report = json_output(done)
    assert (report["sent"], report["skipped"], report["failed"]) == (3, 0, 0)
    assert {entry["name"] for entry in report["files"]} == set(digests)
    stored = {entry["sha256"]: entry for entry in stored_files(freight_server.url)}
    assert set(stored) == set(digests.values())
    # Files from a directory keep their relative path, as Uppy's relativePath.
    b_id = stored[digests["photos/2024/b.bin"]]["id"]
    assert tus_metadata(freight_server.url, b_id)["relativePath"] == "photos/2024/b.bin"
    assert "relativePath" not in tus_metadata(
        freight_server.url, stored[digests["notes.txt"]]["id"]
    )

    # Again: everything is there already, and nothing is sent.
    again = json_output(
        run_cli("send", "photos", "notes.txt", freight_server.url, "--exclude", "*.tmp",
                "--exclude", ".cache", "--json", env=env, cwd=tmp_path)
    )  # fmt: skip
    assert (again["sent"], again["skipped"], again["failed"]) == (0, 3, 0)
    assert len(stored_files(freight_server.url)) == 3

    # --force sends them anyway.
    forced = json_output(
        run_cli("send", "notes.txt", freight_server.url, "--force", "--json", env=env, cwd=tmp_path)
    )
    assert "skipped" not in forced and forced["sha256"] == digests["notes.txt"]
    assert len(stored_files(freight_server.url)) == 4


def test_a_failed_file_makes_the_exit_status_non_zero(
    freight_server: Any, tmp_path: Path, env: dict[str, str]
) -> None:
    make_file(tmp_path / "good.bin", 1000)
    done = run_cli("send", "good.bin", "missing.bin", freight_server.url, env=env, cwd=tmp_path)
    assert done.returncode == 1, done
    assert "Failed missing.bin: no such file" in done.stderr
    assert "1 sent" in done.stdout and "1 failed" in done.stdout
    assert len(stored_files(freight_server.url)) == 1


def test_skipping_says_so_and_only_a_same_size_file_is_hashed_first(
    freight_server: Any, tmp_path: Path, env: dict[str, str]
) -> None:
    first = tmp_path / "first.bin"
    digest = make_file(first, MiB)
    json_output(run_cli("send", str(first), freight_server.url, "--json", env=env))
    copy = tmp_path / "copy.bin"
    copy.write_bytes(first.read_bytes())
    done = run_cli("send", str(copy), freight_server.url, env=env)
    assert done.returncode == 0, done.stderr
    assert "Skipped copy.bin: the server has it already" in done.stderr
    assert digest in done.stdout
    assert len(stored_files(freight_server.url)) == 1
    # Same size, other bytes: hashed, asked for, not found, sent.
    other = tmp_path / "other.bin"
    other_digest = make_file(other, MiB)
    report = json_output(run_cli("send", str(other), freight_server.url, "--json", env=env))
    assert report["sha256"] == other_digest and report["verified"]
    assert len(stored_files(freight_server.url)) == 2


def test_the_exists_query(freight_server: Any, tmp_path: Path, env: dict[str, str]) -> None:
    path = tmp_path / "f.bin"
    digest = make_file(path, 4096)
    json_output(run_cli("send", str(path), freight_server.url, "--json", env=env))

    def ask(query: str) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(f"{freight_server.url}/api/files?{query}") as resp:
                return resp.status, json.load(resp)
        except urllib.error.HTTPError as exc:
            return exc.code, json.load(exc)

    status, body = ask(f"size=4096&sha256={digest.upper()}")
    assert status == 200 and [f["sha256"] for f in body["files"]] == [digest]
    assert ask(f"size=4095&sha256={digest}")[1]["files"] == []
    assert ask("size=4096")[1]["files"][0]["size"] == 4096
    assert ask("size=4096&sha256=" + "0" * 64)[1]["files"] == []
    for bad in ("size=-1", "size=x", f"sha256={digest}", "size=1&sha256=zz", "size=" + "9" * 30):
        status, body = ask(bad)
        assert status == 400 and body["code"], bad


def test_ls_shows_short_ids_that_get_and_rm_take(
    freight_server: Any, tmp_path: Path, env: dict[str, str]
) -> None:
    digests = {}
    for name in ("one.bin", "two.bin"):
        digests[name] = make_file(tmp_path / name, 5000 + len(digests))
        json_output(run_cli("send", str(tmp_path / name), freight_server.url, "--json", env=env))
    ids = {entry["name"]: entry["id"] for entry in stored_files(freight_server.url)}
    # Piped (no terminal) and narrow: the id column is still there, as a short prefix.
    listing = run_cli("ls", freight_server.url, env={**env, "COLUMNS": "70"})
    assert listing.returncode == 0, listing.stderr
    rows = [[cell.strip() for cell in line.split("│")] for line in listing.stdout.splitlines()[2:]]
    shown = {row[1]: row[0] for row in rows}
    for name, full in ids.items():
        assert 8 <= len(shown[name]) < len(full) and full.startswith(shown[name])
    got = run_cli("get", f"{freight_server.url}/files/{shown['one.bin']}", "-o", "copy.bin",
                  "--json", env=env, cwd=tmp_path)  # fmt: skip
    assert json_output(got)["sha256"] == digests["one.bin"]
    assert sha256_of(tmp_path / "copy.bin") == digests["one.bin"]
    removed = run_cli("rm", freight_server.url, shown["two.bin"], "--json", env=env)
    assert json_output(removed)["deleted"] == ids["two.bin"]
    assert [entry["name"] for entry in stored_files(freight_server.url)] == ["one.bin"]


def test_an_ambiguous_prefix_lists_the_candidates(
    freight_server: Any, tmp_path: Path, env: dict[str, str]
) -> None:
    names = []
    for index in range(30):
        names.append(f"f{index}.bin")
        (tmp_path / names[-1]).write_bytes(bytes([index]) * (100 + index))
    json_output(run_cli("send", *names, freight_server.url, "--json", env=env, cwd=tmp_path))
    ids = [entry["id"] for entry in stored_files(freight_server.url)]
    # 30 random ids, 64 possible first characters: two share one but once in 10^6 runs.
    first = next((c for c in {i[0] for i in ids} if sum(i[0] == c for i in ids) > 1), None)
    if first is None:
        pytest.skip("no two of the ids share a first character this time")
    done = run_cli("get", f"{freight_server.url}/files/{first}", env=env, cwd=tmp_path)
    assert done.returncode == 1
    assert "is the start of" in done.stderr
    for candidate in (i for i in ids if i.startswith(first)):
        assert candidate in done.stderr
    assert list(tmp_path.glob("f*.bin")) and not list(tmp_path.glob("download*"))


@pytest.mark.parametrize("suffix", ["", "/", "/files/"])
def test_get_of_the_server_root_is_refused(
    freight_server: Any, tmp_path: Path, env: dict[str, str], suffix: str
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    done = run_cli("get", freight_server.url + suffix, env=env, cwd=work)
    assert done.returncode == 1
    assert "names no file" in done.stderr
    assert list(work.iterdir()) == []


def test_send_to_a_tcp_url_picks_the_tcp_protocol(
    server_factory: Any, tmp_path: Path, env: dict[str, str]
) -> None:
    server = server_factory(data_dir=tmp_path / "data", args=["--tcp-port", "0"]).start()
    path = tmp_path / "t.bin"
    digest = make_file(path, 100_000)
    report = json_output(run_cli("send", str(path), tcp_url(server), "--json", env=env))
    assert report["sha256"] == digest and report["verified"]


def test_a_server_never_reached_fails_within_seconds(tmp_path: Path, env: dict[str, str]) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    path = tmp_path / "f.bin"
    make_file(path, 1000)
    started = time.monotonic()
    done = run_cli("send", str(path), f"http://127.0.0.1:{port}", env=env)
    took = time.monotonic() - started
    assert done.returncode == 1
    assert "cannot connect" in done.stderr and "gave up" in done.stderr
    assert took < 20, took  # was 138 s: ten retries with backoff up to 30 s


def test_sizes_are_binary(freight_server: Any, tmp_path: Path, env: dict[str, str]) -> None:
    path = tmp_path / "f.bin"
    make_file(path, 3 * MiB)
    sent = run_cli("send", str(path), freight_server.url, env=env)
    assert "(3.0 MiB)" in sent.stdout, sent.stdout
    listing = run_cli("ls", freight_server.url, env=env)
    assert "3.0 MiB" in listing.stdout and "MB" not in listing.stdout
