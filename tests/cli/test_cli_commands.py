"""The command surface: help everywhere, shared options, one-line errors without a server."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import click
import pytest
from cli_support import run_cli
from click.testing import CliRunner

from freight.cli.main import cli

CLIENT_COMMANDS = ["send", "get", "ls", "rm"]


def commands() -> dict[str, click.Command]:
    """Every command of the group (each imported on demand)."""
    assert isinstance(cli, click.Group)
    with click.Context(cli) as ctx:
        found = {name: cli.get_command(ctx, name) for name in cli.list_commands(ctx)}
    return {name: command for name, command in found.items() if command is not None}


def test_every_command_has_help_text() -> None:
    runner = CliRunner()
    assert set(CLIENT_COMMANDS) | {"serve"} <= set(commands())
    for name, command in commands().items():
        result = runner.invoke(cli, [name, "--help"])
        assert result.exit_code == 0, result.output
        assert command.help and command.help.strip(), name
        assert command.help.strip().splitlines()[0] in result.output


@pytest.mark.parametrize("name", CLIENT_COMMANDS)
def test_client_commands_share_token_and_json(name: str) -> None:
    command = commands()[name]
    options = {opt for param in command.params for opt in getattr(param, "opts", [])}
    assert {"--token", "--json", "--retries"} <= options
    token = next(p for p in command.params if p.name == "token")
    assert isinstance(token, click.Option) and token.envvar == "FREIGHT_TOKEN"


def test_the_server_loads_no_client_and_a_client_no_server() -> None:
    """Commands are imported when they run: a server process does not carry the client
    library and its terminal rendering (5 MiB), nor a client the server."""
    probe = (
        "import sys, click\n"
        "from freight.cli.main import cli\n"
        "cli.get_command(click.Context(cli), sys.argv[1])\n"
        "names = {m.split('.')[1] for m in sys.modules if m.startswith('freight.')}\n"
        "print(*sorted(names | ({'rich'} & set(sys.modules))))"
    )
    loaded = {}
    for name in ("serve", "send"):
        done = subprocess.run(
            [sys.executable, "-c", probe, name], capture_output=True, text=True, check=True
        )
        loaded[name] = set(done.stdout.split())
    assert "client" not in loaded["serve"] and "rich" not in loaded["serve"]
    assert "server" not in loaded["send"] and "storage" not in loaded["send"]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _assert_one_line_error(stderr: str, *fragments: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("Error: "), stderr
    assert "Traceback" not in stderr
    for fragment in fragments:
        assert fragment in lines[0], stderr


@pytest.mark.parametrize(
    "args",
    [
        ["send", "{file}", "{url}"],
        ["get", "{url}/files/abc", "-o", "{dir}/out"],
        ["ls", "{url}"],
        ["rm", "{url}/files/abc"],
    ],
    ids=lambda args: args[0],
)
def test_unreachable_server_is_one_red_line_and_exit_1(
    args: list[str], tmp_path: Path, env: dict[str, str]
) -> None:
    (tmp_path / "f.bin").write_bytes(b"x" * 1000)
    url = f"http://127.0.0.1:{_closed_port()}"
    values = {"file": str(tmp_path / "f.bin"), "url": url, "dir": str(tmp_path)}
    done = run_cli(*(a.format(**values) for a in args), "--retries", "0", env=env)
    assert done.returncode == 1
    _assert_one_line_error(done.stderr, "cannot connect to 127.0.0.1", "Connection refused")
    assert done.stdout == ""


def test_retries_are_announced_then_given_up(tmp_path: Path, env: dict[str, str]) -> None:
    done = run_cli("ls", f"http://127.0.0.1:{_closed_port()}", "--retries", "2", env=env)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert sum("retrying in" in line for line in lines) == 2
    assert lines[-1].startswith("Error: ") and "gave up after 3 attempts" in lines[-1]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["send", "{dir}/missing.bin", "http://127.0.0.1:1"], "no such file"),
        (["send", "{dir}", "http://127.0.0.1:1"], "nothing to send"),
        (["send", "/dev/null", "http://127.0.0.1:1"], "not a file"),
        (["ls", "not a url"], "not an http(s) URL"),
        (["rm", "http://127.0.0.1:1/"], "name the file to delete"),
        (["ls", "http://127.0.0.1:1", "--token", "two words"], "token"),
    ],
)
def test_bad_input_is_one_red_line(
    args: list[str], fragment: str, tmp_path: Path, env: dict[str, str]
) -> None:
    done = run_cli(*(a.format(dir=tmp_path) for a in args), env=env)
    assert done.returncode == 1
    _assert_one_line_error(done.stderr, fragment)
