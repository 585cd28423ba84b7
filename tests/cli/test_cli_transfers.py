"""End to end against a real ``freight serve``: the CLI in subprocesses, real sockets.

Interruptions are made by a proxy between client and server (a cut connection, or a link
that swallows everything), by signals to the client, and by killing the server.
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cli_support import (
    ChaosProxy,
    MiB,
    _Rule,
    json_output,
    make_file,
    peak_rss_of,
    run_cli,
    sha256_of,
    start_cli,
)

from freight.client.partfile import part_path
from freight.client.resume_store import DownloadKey, DownloadState, ResumeStore

Proxy = Callable[[int], ChaosProxy]
OVERHEAD = 64 * 1024  # request and response headers, generously


def _wait_for(condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def _server_offset(upload_url: str) -> int:
    request = urllib.request.Request(upload_url, method="HEAD", headers={"Tus-Resumable": "1.0.0"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        return int(resp.headers["Upload-Offset"])


def _remembered_upload(state_dir: Path) -> str:
    entries = json.loads((state_dir / "uploads.json").read_text())["entries"]
    assert len(entries) == 1, entries
    return str(entries[0]["upload_url"])


def test_send_get_ls_rm_round_trip(
    freight_server: Any, tmp_path: Path, env: dict[str, str]
) -> None:
    source = tmp_path / "disk image.img"
    digest = make_file(source, 20 * MiB + 123)
    sent = json_output(run_cli("send", str(source), freight_server.url, "--json", env=env))
    assert sent["sha256"] == digest
    assert sent["verified"] is True and sent["resumed_from"] == 0
    assert sent["size"] == 20 * MiB + 123 and sent["name"] == "disk image.img"
    assert sent["url"].startswith(freight_server.url + "/files/")

    out = tmp_path / "copy.img"
    got = json_output(run_cli("get", sent["url"], "-o", str(out), "--json", env=env))
    assert got["sha256"] == digest and got["verified"] is True
    assert sha256_of(out) == digest
    assert not part_path(out).exists()

    # Without -o the server's name is used, in the current directory.
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    named = json_output(run_cli("get", sent["url"], "--json", env=env, cwd=downloads))
    assert Path(named["path"]).name == "disk image.img"
    assert sha256_of(downloads / "disk image.img") == digest
    refused = run_cli("get", sent["url"], env=env, cwd=downloads)
    assert refused.returncode == 1 and "already exists" in refused.stderr

    listed = json_output(run_cli("ls", freight_server.url, "--json", env=env))
    [entry] = listed["files"]
    assert entry["name"] == "disk image.img" and entry["sha256"] == digest
    assert entry["size"] == 20 * MiB + 123 and entry["url"] == sent["url"] and entry["created"]
    table = run_cli("ls", freight_server.url, env={**env, "COLUMNS": "200"})
    assert "disk image.img" in table.stdout and digest in table.stdout

    assert json_output(run_cli("rm", sent["url"], "--json", env=env)) == {"deleted": entry["id"]}
    assert json_output(run_cli("ls", freight_server.url, "--json", env=env)) == {"files": []}
    gone = run_cli("get", sent["url"], "-o", str(tmp_path / "again"), env=env)
    assert gone.returncode == 1 and gone.stderr.startswith("Error: ") and "404" in gone.stderr


def test_human_output_shows_url_and_sha256(
    freight_server: Any, tmp_path: Path, env: dict[str, str]
) -> None:
    source = tmp_path / "a.bin"
    digest = make_file(source, 3 * MiB)
    done = run_cli("send", str(source), freight_server.url + "/files/", env=env)
    assert done.returncode == 0, done.stderr
    assert f"SHA-256: {digest}" in done.stdout
    url = next(line.split()[-1] for line in done.stdout.splitlines() if line.startswith("URL:"))
    file_id = url.rsplit("/", 1)[-1]
    # The `URL ID` form of rm.
    removed = run_cli("rm", freight_server.url, file_id, env=env)
    assert removed.returncode == 0 and file_id in removed.stdout


def test_empty_file_round_trip(freight_server: Any, tmp_path: Path, env: dict[str, str]) -> None:
    source = tmp_path / "empty"
    source.write_bytes(b"")
    sent = json_output(run_cli("send", str(source), freight_server.url, "--json", env=env))
    assert sent["size"] == 0 and sent["sha256"] == sha256_of(source)
    got = json_output(run_cli("get", sent["url"], "-o", str(tmp_path / "e2"), "--json", env=env))
    assert got["size"] == 0 and (tmp_path / "e2").read_bytes() == b""


def test_send_resumes_after_a_cut_connection(
    freight_server: Any, chaos_proxy: Proxy, tmp_path: Path, env: dict[str, str], state_dir: Path
) -> None:
    size = 32 * MiB
    source = tmp_path / "big.bin"
    digest = make_file(source, size)
    proxy = chaos_proxy(freight_server.port)
    proxy.reset(up=_Rule(cut_after=10 * MiB))
    first = run_cli("send", str(source), proxy.url, "--retries", "0", "--json", env=env)
    assert first.returncode == 1 and first.stderr.startswith("Error: "), first.stderr
    assert first.stdout == ""

    durable = _server_offset(_remembered_upload(state_dir).replace(proxy.url, freight_server.url))
    assert 0 < durable <= 10 * MiB

    proxy.reset()
    second = json_output(run_cli("send", str(source), proxy.url, "--json", env=env))
    assert second["resumed_from"] == durable
    assert second["sha256"] == digest and second["verified"] is True
    # Nothing the server had acknowledged was sent again.
    assert proxy.counted["up"] <= size - durable + OVERHEAD
    listed = json_output(run_cli("ls", freight_server.url, "--json", env=env))["files"]
    assert [f["sha256"] for f in listed] == [digest]


def test_send_retries_a_cut_connection_on_its_own(
    freight_server: Any, chaos_proxy: Proxy, tmp_path: Path, env: dict[str, str]
) -> None:
    size = 32 * MiB
    source = tmp_path / "big.bin"
    digest = make_file(source, size)
    proxy = chaos_proxy(freight_server.port)
    proxy.reset(up=_Rule(cut_after=12 * MiB))
    done = run_cli("send", str(source), proxy.url, "--json", env=env)
    result = json_output(done)
    assert result["sha256"] == digest and result["verified"] is True
    assert "retrying in" in done.stderr
    # The retry asked the server's offset and went on from there, not from zero.
    assert proxy.counted["up"] < 2 * size - 8 * MiB
    listed = json_output(run_cli("ls", freight_server.url, "--json", env=env))["files"]
    assert [f["sha256"] for f in listed] == [digest]


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "kill-9"])
def test_send_resumes_after_the_client_is_stopped(
    how: signal.Signals,
    freight_server: Any,
    chaos_proxy: Proxy,
    tmp_path: Path,
    env: dict[str, str],
) -> None:
    size = 40 * MiB
    source = tmp_path / "big.bin"
    digest = make_file(source, size)
    proxy = chaos_proxy(freight_server.port)
    proxy.reset(up=_Rule(blackhole_after=16 * MiB))  # a hung link: the client keeps waiting
    client = start_cli("send", str(source), proxy.url, "--json", env=env)
    _wait_for(lambda: proxy.counted["up"] >= 16 * MiB)
    client.send_signal(how)
    _, stderr = client.communicate(timeout=30)
    if how == signal.SIGINT:
        assert client.returncode == 130
        assert "Run the same command again to resume" in stderr
        assert "Traceback" not in stderr

    proxy.reset()
    result = json_output(run_cli("send", str(source), proxy.url, "--json", env=env))
    assert result["sha256"] == digest and result["verified"] is True
    assert result["resumed_from"] > 0
    assert proxy.counted["up"] <= size - result["resumed_from"] + OVERHEAD


def test_send_survives_a_server_restart(
    server_factory: Any, chaos_proxy: Proxy, tmp_path: Path, env: dict[str, str]
) -> None:
    size = 40 * MiB
    source = tmp_path / "big.bin"
    digest = make_file(source, size)
    first = server_factory(data_dir=tmp_path / "data").start()
    proxy = chaos_proxy(first.port)
    proxy.reset(up=_Rule(blackhole_after=20 * MiB))
    client = start_cli("send", str(source), proxy.url, "--json", "--retries", "10", env=env)
    _wait_for(lambda: proxy.counted["up"] >= 20 * MiB)
    first.kill()
    second = server_factory(data_dir=tmp_path / "data").start()
    proxy.upstream_port = second.port
    proxy.reset()
    stdout, stderr = client.communicate(timeout=120)
    assert client.returncode == 0, stderr
    assert "retrying in" in stderr
    result = json.loads(stdout)
    assert result["sha256"] == digest and result["verified"] is True
    listed = json_output(run_cli("ls", second.url, "--json", env=env))["files"]
    assert [f["sha256"] for f in listed] == [digest]


def test_get_resumes_a_partial_download(
    freight_server: Any, chaos_proxy: Proxy, tmp_path: Path, env: dict[str, str]
) -> None:
    size = 32 * MiB
    source = tmp_path / "big.bin"
    digest = make_file(source, size)
    url = json_output(run_cli("send", str(source), freight_server.url, "--json", env=env))["url"]
    proxy = chaos_proxy(freight_server.port)
    proxied = url.replace(freight_server.url, proxy.url)
    out = tmp_path / "out.bin"
    part = part_path(tmp_path / "out.bin")

    proxy.reset(down=_Rule(cut_after=10 * MiB))
    first = run_cli("get", proxied, "-o", str(out), "--retries", "0", env=env)
    assert first.returncode == 1 and first.stderr.startswith("Error: ")
    kept = part.stat().st_size
    assert 0 < kept < 10 * MiB and not out.exists()

    proxy.reset()
    result = json_output(run_cli("get", proxied, "-o", str(out), "--json", env=env))
    assert result["resumed_from"] == kept and result["restarted"] is False
    assert result["sha256"] == digest and sha256_of(out) == digest
    assert proxy.counted["down"] <= size - kept + OVERHEAD
    assert not part.exists()


def test_get_resumes_after_ctrl_c(
    freight_server: Any, chaos_proxy: Proxy, tmp_path: Path, env: dict[str, str]
) -> None:
    size = 32 * MiB
    source = tmp_path / "big.bin"
    digest = make_file(source, size)
    url = json_output(run_cli("send", str(source), freight_server.url, "--json", env=env))["url"]
    proxy = chaos_proxy(freight_server.port)
    proxied = url.replace(freight_server.url, proxy.url)
    out = tmp_path / "out.bin"
    part = part_path(tmp_path / "out.bin")

    proxy.reset(down=_Rule(blackhole_after=12 * MiB))
    client = start_cli("get", proxied, "-o", str(out), "--json", env=env)
    _wait_for(lambda: proxy.counted["down"] >= 12 * MiB)
    _wait_for(lambda: part.exists() and part.stat().st_size >= 11 * MiB)
    client.send_signal(signal.SIGINT)
    stdout, stderr = client.communicate(timeout=30)
    assert client.returncode == 130 and stdout == ""
    assert "Run the same command again to resume" in stderr and "Traceback" not in stderr
    kept = part.stat().st_size
    assert kept < 12 * MiB  # whatever arrived was written before exiting

    proxy.reset()
    result = json_output(run_cli("get", proxied, "-o", str(out), "--json", env=env))
    assert result["resumed_from"] == kept and sha256_of(out) == digest


def test_get_starts_over_when_the_part_is_from_another_version(
    freight_server: Any, tmp_path: Path, env: dict[str, str], state_dir: Path
) -> None:
    source = tmp_path / "big.bin"
    digest = make_file(source, 8 * MiB)
    url = json_output(run_cli("send", str(source), freight_server.url, "--json", env=env))["url"]
    out = tmp_path / "out.bin"
    part = part_path(tmp_path / "out.bin")
    part.write_bytes(os.urandom(3 * MiB))  # bytes of some other version of the file
    ResumeStore(state_dir).put_download(
        DownloadKey.for_part(part, url), DownloadState(etag='"not-this-version"', size=8 * MiB)
    )
    result = json_output(run_cli("get", url, "-o", str(out), "--json", env=env))
    assert result["restarted"] is True and result["resumed_from"] == 0
    assert sha256_of(out) == digest


def test_token_is_sent_from_option_or_environment(
    server_factory: Any, tmp_path: Path, env: dict[str, str]
) -> None:
    server = server_factory(data_dir=tmp_path / "data", args=["--token", "s3cret"]).start()
    source = tmp_path / "a.bin"
    digest = make_file(source, MiB)
    refused = run_cli("send", str(source), server.url, env=env)
    assert refused.returncode == 1
    assert refused.stderr.startswith("Error: ") and "401" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1

    sent = json_output(
        run_cli("send", str(source), server.url, "--token", "s3cret", "--json", env=env)
    )
    with_env = {**env, "FREIGHT_TOKEN": "s3cret"}
    listed = json_output(run_cli("ls", server.url, "--json", env=with_env))
    assert [f["sha256"] for f in listed["files"]] == [digest]
    out = tmp_path / "out.bin"
    json_output(run_cli("get", sent["url"], "-o", str(out), "--json", env=with_env))
    assert sha256_of(out) == digest
    assert run_cli("rm", sent["url"], env=env).returncode == 1
    assert run_cli("rm", sent["url"], env=with_env).returncode == 0


def test_memory_stays_flat(freight_server: Any, tmp_path: Path, env: dict[str, str]) -> None:
    baseline, _ = peak_rss_of("ls", freight_server.url, env=env)
    source = tmp_path / "big.bin"
    digest = make_file(source, 64 * MiB)
    sent_peak, sent = peak_rss_of("send", str(source), freight_server.url, "--json", env=env)
    url = json_output(sent)["url"]
    got_peak, got = peak_rss_of("get", url, "-o", str(tmp_path / "o"), "--json", env=env)
    assert json_output(got)["sha256"] == digest
    # Holding the file would add 64 MiB; a few chunks and thread stacks are all we allow.
    assert sent_peak - baseline < 24 * MiB, (baseline, sent_peak)
    assert got_peak - baseline < 24 * MiB, (baseline, got_peak)
