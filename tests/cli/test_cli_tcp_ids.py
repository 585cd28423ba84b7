"""Short id prefixes over ``tcp://``: ``freight get tcp://host:port/PREFIX`` as over HTTP.

The TCP protocol lists nothing, so its server completes the prefix of a ``GET`` itself,
from the files the connection's principal may see, and names the candidates when several
ids start with it (the HTTP side: tests/cli/test_cli_many.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cli_support import json_output, run_cli, sha256_of, stored_files, tcp_url


def test_a_short_id_names_its_file_over_tcp_and_an_ambiguous_one_lists_the_candidates(
    server_factory: Any, tmp_path: Path, env: dict[str, str]
) -> None:
    server = server_factory(data_dir=tmp_path / "data", args=["--tcp-port", "0"]).start()
    tcp = tcp_url(server)
    names = []
    for index in range(30):
        names.append(f"f{index}.bin")
        (tmp_path / names[-1]).write_bytes(bytes([index]) * (100 + index))
    json_output(run_cli("send", *names, server.url, "--json", env=env, cwd=tmp_path))
    stored = stored_files(server.url)
    ids = [entry["id"] for entry in stored]

    # The short id `ls` shows (8 characters here: 30 ids share no 8-character prefix).
    wanted = stored[3]
    got = run_cli("get", f"{tcp}/{wanted['id'][:8]}", "-o", "copy.bin", "--json",
                  env=env, cwd=tmp_path)  # fmt: skip
    assert json_output(got)["sha256"] == wanted["sha256"]
    assert sha256_of(tmp_path / "copy.bin") == wanted["sha256"]

    # A prefix nothing starts with is an unknown file, as before.
    unknown = next(c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
                   if not any(i.startswith(c) for i in ids))  # fmt: skip
    missing = run_cli("get", f"{tcp}/{unknown}", "-o", "none.bin", env=env, cwd=tmp_path)
    assert missing.returncode == 1
    assert "no such upload" in missing.stderr

    # 30 random ids, 64 possible first characters: two share one but once in 10^6 runs.
    first = next((c for c in {i[0] for i in ids} if sum(i[0] == c for i in ids) > 1), None)
    if first is None:
        pytest.skip("no two of the ids share a first character this time")
    done = run_cli("get", f"{tcp}/{first}", "-o", "which.bin", env=env, cwd=tmp_path)
    assert done.returncode == 1
    assert "is the start of" in done.stderr
    assert "ERR_AMBIGUOUS_ID" in done.stderr
    for candidate in (i for i in ids if i.startswith(first)):
        assert candidate in done.stderr
    assert not (tmp_path / "which.bin").exists()


def test_ls_and_rm_of_a_tcp_url_say_to_use_http(
    server_factory: Any, tmp_path: Path, env: dict[str, str]
) -> None:
    server = server_factory(data_dir=tmp_path / "data", args=["--tcp-port", "0"]).start()
    tcp = tcp_url(server)
    for args in (("ls", tcp), ("rm", f"{tcp}/abcdefgh"), ("rm", tcp, "abcdefgh")):
        done = run_cli(*args, env=env)
        assert done.returncode == 1
        assert "only sends and fetches files" in done.stderr, done.stderr
        assert "http(s) URL" in done.stderr
