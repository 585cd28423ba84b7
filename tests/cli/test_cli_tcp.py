"""``freight send --protocol tcp`` and ``freight get tcp://…`` against a real server.

The server runs ``freight serve --tcp-port 0`` and shares one engine between HTTP and TCP,
so an upload sent over TCP is listed, and its durable offset read, over HTTP. Interruptions
come from the fault-injecting proxy in ``cli_support`` and from signals to the client.
"""

from __future__ import annotations

import json
import re
import signal
import socket
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
    run_cli,
    sha256_of,
    start_cli,
)

from freight.client.partfile import part_path

Proxy = Callable[[int], ChaosProxy]
TCP_LINE = re.compile(r"tcp listening on tcp://[^\s:]+:(\d+)")
OVERHEAD = 64 * 1024  # frame headers and control frames, generously


class TcpFreight:
    """A ``freight serve`` with ``--tcp-port 0``: ``http`` is its HTTP URL, ``tcp`` its TCP."""

    def __init__(self, server: Any) -> None:
        self.http = server.url
        deadline = time.monotonic() + 20
        while not (port := _tcp_port(list(server.output_tail))):
            assert time.monotonic() < deadline, list(server.output_tail)
            time.sleep(0.02)
        self.port = port
        self.tcp = f"tcp://127.0.0.1:{port}"

    def offset(self, upload_id: str) -> int:
        """The durable offset of an upload, asked over HTTP (tus HEAD)."""
        request = urllib.request.Request(
            f"{self.http}/files/{upload_id}", method="HEAD", headers={"Tus-Resumable": "1.0.0"}
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            return int(resp.headers["Upload-Offset"])


def _tcp_port(lines: list[str]) -> int | None:
    for line in lines:
        if match := TCP_LINE.search(line):
            return int(match.group(1))
    return None


@pytest.fixture
def freight_tcp(server_factory: Any, tmp_path: Path) -> TcpFreight:
    return TcpFreight(server_factory(data_dir=tmp_path / "data", args=["--tcp-port", "0"]).start())


def _wait_for(condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def _remembered_id(state_dir: Path) -> str:
    entries = json.loads((state_dir / "uploads.json").read_text())["entries"]
    assert len(entries) == 1, entries
    return str(entries[0]["upload_url"]).rsplit("/", 1)[1]


def _one_line_error(done: Any, *fragments: str) -> None:
    assert done.returncode == 1, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), done.stderr
    for fragment in fragments:
        assert fragment in lines[0], done.stderr


def test_send_and_get_over_tcp(
    freight_tcp: TcpFreight, tmp_path: Path, env: dict[str, str]
) -> None:
    source = tmp_path / "disk image.img"
    digest = make_file(source, 20 * MiB + 123)
    sent = json_output(
        run_cli("send", "--protocol", "tcp", str(source), freight_tcp.tcp, "--json", env=env)
    )
    assert sent["sha256"] == digest and sent["verified"] is True
    assert sent["url"].startswith(freight_tcp.tcp + "/") and sent["name"] == "disk image.img"

    out = tmp_path / "copy.img"
    got = json_output(run_cli("get", sent["url"], "-o", str(out), "--json", env=env))
    assert got["sha256"] == digest and got["verified"] is True and sha256_of(out) == digest

    downloads = tmp_path / "downloads"
    downloads.mkdir()
    named = json_output(run_cli("get", sent["url"], "--json", env=env, cwd=downloads))
    assert Path(named["path"]).name == "disk image.img"  # the server's name for it
    # One engine behind both listeners: HTTP lists what TCP received.
    listed = json_output(run_cli("ls", freight_tcp.http, "--json", env=env))["files"]
    assert [(f["name"], f["sha256"]) for f in listed] == [("disk image.img", digest)]


def test_human_output_over_tcp(
    freight_tcp: TcpFreight, tmp_path: Path, env: dict[str, str]
) -> None:
    source = tmp_path / "small.bin"
    digest = make_file(source, 1000)
    done = run_cli("send", "--protocol", "tcp", str(source), freight_tcp.tcp, env=env)
    assert done.returncode == 0, done.stderr
    assert "Sent small.bin" in done.stdout and digest in done.stdout
    assert "SHA-256 matches the server's" in done.stdout


def test_send_resumes_after_a_cut_connection(
    freight_tcp: TcpFreight,
    chaos_proxy: Proxy,
    tmp_path: Path,
    env: dict[str, str],
    state_dir: Path,
) -> None:
    size = 56 * MiB
    source = tmp_path / "big.bin"
    digest = make_file(source, size)
    proxy = chaos_proxy(freight_tcp.port)
    proxied = f"tcp://127.0.0.1:{proxy.port}"
    proxy.reset(up=_Rule(cut_after=37 * MiB))
    first = run_cli("send", "--protocol", "tcp", str(source), proxied, "--retries", "0", env=env)
    _one_line_error(first)

    durable = freight_tcp.offset(_remembered_id(state_dir))
    assert 16 * MiB <= durable <= 37 * MiB  # at least the first ACKed window
    proxy.reset()
    second = json_output(
        run_cli("send", "--protocol", "tcp", str(source), proxied, "--json", env=env)
    )
    assert second["resumed_from"] == durable
    assert second["sha256"] == digest and second["verified"] is True
    assert proxy.counted["up"] <= size - durable + OVERHEAD  # nothing durable was sent again


def test_send_retries_a_cut_connection_on_its_own(
    freight_tcp: TcpFreight, chaos_proxy: Proxy, tmp_path: Path, env: dict[str, str]
) -> None:
    size = 40 * MiB
    source = tmp_path / "big.bin"
    digest = make_file(source, size)
    proxy = chaos_proxy(freight_tcp.port)
    proxy.reset(up=_Rule(cut_after=20 * MiB))
    done = run_cli(
        "send", "--protocol", "tcp", str(source), f"tcp://127.0.0.1:{proxy.port}", "--json", env=env
    )
    assert json_output(done)["sha256"] == digest
    assert "retrying in" in done.stderr
    assert proxy.counted["up"] < size + 2 * 16 * MiB  # the retry went on from the server's offset


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "kill-9"])
def test_send_resumes_after_the_client_is_stopped(
    how: signal.Signals,
    freight_tcp: TcpFreight,
    chaos_proxy: Proxy,
    tmp_path: Path,
    env: dict[str, str],
) -> None:
    size = 48 * MiB
    source = tmp_path / "big.bin"
    digest = make_file(source, size)
    proxy = chaos_proxy(freight_tcp.port)
    proxied = f"tcp://127.0.0.1:{proxy.port}"
    proxy.reset(up=_Rule(blackhole_after=20 * MiB))  # a hung link: the client waits for an ACK
    client = start_cli("send", "--protocol", "tcp", str(source), proxied, "--json", env=env)
    _wait_for(lambda: proxy.counted["up"] >= 20 * MiB)
    client.send_signal(how)
    _, stderr = client.communicate(timeout=30)
    if how == signal.SIGINT:
        assert client.returncode == 130
        assert "Run the same command again to resume" in stderr and "Traceback" not in stderr

    proxy.reset()
    result = json_output(
        run_cli("send", "--protocol", "tcp", str(source), proxied, "--json", env=env)
    )
    assert result["sha256"] == digest and result["resumed_from"] >= 16 * MiB
    assert proxy.counted["up"] <= size - result["resumed_from"] + OVERHEAD


def test_get_resumes_a_partial_download(
    freight_tcp: TcpFreight, chaos_proxy: Proxy, tmp_path: Path, env: dict[str, str]
) -> None:
    source = tmp_path / "big.bin"
    digest = make_file(source, 32 * MiB)
    url = json_output(
        run_cli("send", "--protocol", "tcp", str(source), freight_tcp.tcp, "--json", env=env)
    )["url"]
    proxy = chaos_proxy(freight_tcp.port)
    proxied = url.replace(freight_tcp.tcp, f"tcp://127.0.0.1:{proxy.port}")
    out = tmp_path / "out.bin"
    proxy.reset(down=_Rule(cut_after=10 * MiB))
    _one_line_error(run_cli("get", proxied, "-o", str(out), "--retries", "0", env=env))
    kept = part_path(tmp_path / "out.bin").stat().st_size
    assert 0 < kept <= 10 * MiB

    proxy.reset()
    result = json_output(run_cli("get", proxied, "-o", str(out), "--json", env=env))
    assert result["resumed_from"] == kept and not result["restarted"]
    assert sha256_of(out) == digest
    assert proxy.counted["down"] <= 32 * MiB - kept + OVERHEAD  # a GET from the .part's size


def test_failures_are_one_red_line(
    freight_tcp: TcpFreight, server_factory: Any, tmp_path: Path, env: dict[str, str]
) -> None:
    source = tmp_path / "small.bin"
    make_file(source, 1000)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    unreachable = run_cli("get", f"tcp://127.0.0.1:{closed}/abc", "--retries", "0", env=env)
    _one_line_error(unreachable, "cannot connect")
    missing = run_cli("get", f"{freight_tcp.tcp}/nope", "-o", str(tmp_path / "x"), env=env)
    _one_line_error(missing, "ERR_UPLOAD_NOT_FOUND")
    not_tcp = run_cli("send", "--protocol", "tcp", str(source), freight_tcp.http, env=env)
    _one_line_error(not_tcp, "tcp://host:port")
    guarded = TcpFreight(
        server_factory(
            data_dir=tmp_path / "guarded", args=["--tcp-port", "0", "--token", "s3cret"]
        ).start()
    )
    refused = run_cli(
        "send", "--protocol", "tcp", str(source), guarded.tcp, "--token", "wrong", env=env
    )
    _one_line_error(refused, "ERR_UNAUTHORIZED")
    allowed = run_cli(
        "send", "--protocol", "tcp", str(source), guarded.tcp, "--token", "s3cret", env=env
    )
    assert allowed.returncode == 0, allowed.stderr


def test_serve_without_tcp_port_opens_no_tcp_listener(freight_server: Any) -> None:
    time.sleep(0.3)
    assert _tcp_port(list(freight_server.output_tail)) is None
