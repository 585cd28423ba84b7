"""``--limit-rate``: one token bucket paces every protocol's sending loop and downloads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cli_support import MiB, json_output, make_file, run_cli, tcp_url

RATE = 2 * MiB  # --limit-rate 2M
SIZE = 6 * MiB  # three seconds at that rate


def _within_ten_percent(size: int, seconds: float) -> None:
    rate = size / seconds
    assert 0.9 * RATE <= rate <= 1.1 * RATE, f"{rate / MiB:.2f} MiB/s for 2 MiB/s"


@pytest.mark.parametrize("protocol", ["tus", "chunks", "ws"])
def test_sending_keeps_to_the_rate(
    freight_server: Any, tmp_path: Path, env: dict[str, str], protocol: str
) -> None:
    path = tmp_path / "f.bin"
    digest = make_file(path, SIZE)
    done = run_cli(
        "send", str(path), freight_server.url, "--protocol", protocol, "--limit-rate", "2M",
        "--json", env=env,
    )  # fmt: skip
    report = json_output(done)
    assert report["sha256"] == digest
    _within_ten_percent(SIZE, report["seconds"])


def test_downloading_keeps_to_the_rate(
    freight_server: Any, tmp_path: Path, env: dict[str, str]
) -> None:
    path = tmp_path / "f.bin"
    make_file(path, SIZE)
    url = json_output(run_cli("send", str(path), freight_server.url, "--json", env=env))["url"]
    got = run_cli("get", url, "-o", str(tmp_path / "copy.bin"), "--limit-rate", "2M", "--json",
                  env=env)  # fmt: skip
    _within_ten_percent(SIZE, json_output(got)["seconds"])


def test_several_files_share_one_limit(
    freight_server: Any, tmp_path: Path, env: dict[str, str]
) -> None:
    for name in ("a.bin", "b.bin", "c.bin"):
        make_file(tmp_path / name, SIZE // 3)
    done = run_cli(
        "send", "a.bin", "b.bin", "c.bin", freight_server.url, "--transfers", "3",
        "--limit-rate", "2M", "--json", env=env, cwd=tmp_path,
    )  # fmt: skip
    report = json_output(done)
    assert report["sent"] == 3
    _within_ten_percent(SIZE, report["seconds"])


def test_a_bad_rate_is_refused(tmp_path: Path, env: dict[str, str]) -> None:
    done = run_cli("get", "http://127.0.0.1:1/files/x", "--limit-rate", "fast", env=env)
    assert done.returncode == 2 and "--limit-rate" in done.stderr


def test_tcp_sending_and_downloading_keep_to_the_rate(
    server_factory: Any, tmp_path: Path, env: dict[str, str]
) -> None:
    server = server_factory(data_dir=tmp_path / "data", args=["--tcp-port", "0"]).start()
    tcp = tcp_url(server)
    path = tmp_path / "f.bin"
    make_file(path, SIZE)
    sent = json_output(run_cli("send", str(path), tcp, "--limit-rate", "2M", "--json", env=env))
    _within_ten_percent(SIZE, sent["seconds"])
    file_id = sent["url"].rstrip("/").rsplit("/", 1)[-1]
    got = run_cli("get", f"{tcp}/{file_id}", "-o", str(tmp_path / "copy.bin"),
                  "--limit-rate", "2M", "--json", env=env)  # fmt: skip
    _within_ten_percent(SIZE, json_output(got)["seconds"])
