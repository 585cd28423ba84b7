"""``freight serve`` settings from flags, FREIGHT_* variables and a TOML file, in that order
of precedence; ``--print-config``; and startup errors as one line with exit status 2."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import LISTEN_LINE
from tests.integration.helpers import free_port, request

TUS = {"Tus-Resumable": "1.0.0"}


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without any FREIGHT_* variable of its own, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FREIGHT_")}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def serve(*args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "freight", "serve", *args],
        capture_output=True,
        text=True,
        env=dict(env or clean_env()),
        timeout=60,
    )


def effective(*args: str, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    done = serve(*args, "--print-config", env=env)
    assert done.returncode == 0, done.stderr
    return tomllib.loads(done.stdout)


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "freight.toml"
    path.write_text(text)
    return path


def test_flag_beats_environment_beats_file_beats_default(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        'port = 9001\nmax_size = 1000\nlog-format = "json"\nexpire-after = 5\n'
        'cors-origin = ["https://a.example"]\nsha256 = false\n',
    )
    defaults = effective()
    assert defaults["port"] == 8080 and "max-size" not in defaults
    assert defaults["log-format"] == "text" and defaults["sha256"] is True

    from_file = effective("--config", str(config))
    assert from_file["port"] == 9001 and from_file["max-size"] == 1000
    assert from_file["log-format"] == "json" and from_file["expire-after"] == 5
    assert from_file["cors-origin"] == ["https://a.example"] and from_file["sha256"] is False
    assert from_file["host"] == "127.0.0.1"  # not in the file: the default

    env = clean_env(
        FREIGHT_CONFIG=str(config), FREIGHT_PORT="9002", FREIGHT_MAX_SIZE="2000", FREIGHT_SHA256="1"
    )
    from_env = effective(env=env)
    assert from_env["port"] == 9002 and from_env["max-size"] == 2000 and from_env["sha256"] is True
    assert from_env["log-format"] == "json"  # only the file sets it

    from_flags = effective("--port", "9003", "--log-format", "text", env=env)
    assert from_flags["port"] == 9003 and from_flags["log-format"] == "text"
    assert from_flags["max-size"] == 2000

    printed = serve("--port", "9003", "--print-config", env=env).stdout
    assert re.search(r"^port = 9003 +# flag$", printed, re.M)
    assert re.search(r"^max-size = 2000 +# environment FREIGHT_MAX_SIZE$", printed, re.M)
    assert re.search(r'^log-format = "json" +# config file$', printed, re.M)
    assert re.search(r'^host = "127.0.0.1" +# default$', printed, re.M)


def test_every_option_has_its_environment_variable() -> None:
    from freight.cli.serve import serve as command

    for param in command.params:
        if param.name == "print_config":
            continue
        long = next(o for o in param.opts if o.startswith("--"))
        assert param.envvar == "FREIGHT_" + long[2:].replace("-", "_").upper(), long
    help_text = serve("--help").stdout
    for name in ("FREIGHT_DATA_DIR", "FREIGHT_SYNC_EVERY", "FREIGHT_CONFIG", "FREIGHT_LOG_LEVEL"):
        assert name in help_text


def test_print_config_masks_the_token_and_reads_back_as_a_config_file(tmp_path: Path) -> None:
    secret = "hunter2-very-secret"
    env = clean_env(FREIGHT_TOKEN=secret, FREIGHT_DATA_DIR=str(tmp_path / "d"))
    done = serve(
        "--print-config", "--sync-every", "1048576", "--trusted-proxy", "10.0.0.0/8", env=env
    )
    assert done.returncode == 0 and done.stderr == ""
    assert secret not in done.stdout
    assert re.search(r'^# token = "\*\*\*" .*set \(environment FREIGHT_TOKEN\)', done.stdout, re.M)
    printed = tomllib.loads(done.stdout)
    assert "token" not in printed
    assert printed["sync-every"] == 1048576 and printed["trusted-proxy"] == ["10.0.0.0/8"]
    assert not (tmp_path / "d").exists()  # printing the settings starts nothing

    saved = write_config(tmp_path, done.stdout)
    again = effective("--config", str(saved))
    assert again == printed


@contextmanager
def running(*args: str, env: Mapping[str, str]) -> Iterator[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "freight", "serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(env),
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = LISTEN_LINE.search(line)
        assert match, line + proc.stdout.read()
        yield match.group(1).rstrip("/")
    finally:
        proc.terminate()
        proc.wait(10)


def created(url: str, length: int) -> int:
    return request("POST", f"{url}/files/", {**TUS, "Upload-Length": str(length)}).status


def test_a_running_server_follows_the_same_precedence(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path, f"port = {port}\nmax-size = 100\n")
    data = ["--data-dir", str(tmp_path / "data")]
    with running("--config", str(config), *data, env=clean_env()) as url:
        assert url == f"http://127.0.0.1:{port}"  # the port came from the file
        assert created(url, 100) == 201 and created(url, 101) == 413

    env = clean_env(FREIGHT_CONFIG=str(config), FREIGHT_MAX_SIZE="200", FREIGHT_PORT="0")
    with running(*data, env=env) as url:
        assert not url.endswith(f":{port}")
        assert created(url, 200) == 201 and created(url, 201) == 413

    with running("--max-size", "300", *data, env=env) as url:
        assert created(url, 300) == 201 and created(url, 301) == 413


def assert_one_line_error(done: subprocess.CompletedProcess[str], *words: str) -> str:
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr + done.stdout
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("freight: error: "), done.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def test_a_busy_port_is_one_line_and_exit_2(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        data = ["--data-dir", str(tmp_path / "data")]
        assert_one_line_error(serve("--port", port, *data), port, "address already in use")
        tcp = ["--port", "0", "--tcp-port", port, *data]
        assert_one_line_error(serve(*tcp), port, "address already in use")


def test_a_bad_data_dir_or_host_is_one_line_and_exit_2(tmp_path: Path) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory")
    assert_one_line_error(serve("--port", "0", "--data-dir", str(a_file)), "is a file")
    inside = a_file / "data"
    assert_one_line_error(serve("--port", "0", "--data-dir", str(inside)), str(inside))
    # An address this machine does not have (TEST-NET-1): no name lookup, no traffic.
    bad_host = ["--host", "192.0.2.1", "--port", "0", "--data-dir", str(tmp_path / "d")]
    assert_one_line_error(serve(*bad_host), "192.0.2.1", "cannot assign requested address")
    # A data directory whose parents are missing is made.
    deep = tmp_path / "new" / "deeper" / "data"
    with running("--port", "0", "--data-dir", str(deep), env=clean_env()):
        assert (deep / "freight.db").exists()


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("prot = 8080\n", ["unknown key 'prot'"]),
        ('port = "8080"\n', ["port:", "expected an integer"]),
        ("max-size = true\n", ["max-size:", "expected an integer"]),
        ("port = 70000\n", ["port:", "65535"]),
        ('fsync = "sometimes"\n', ["fsync:", "sometimes"]),
        ('cors-origin = "https://a.example"\n', ["cors-origin:", "list of strings"]),
        ('trusted-proxy = ["not-a-network"]\n', ["trusted-proxy:", "not-a-network"]),
        ("port = \n", ["not valid TOML"]),
    ],
)
def test_a_bad_config_file_is_one_line_naming_the_key(
    tmp_path: Path, text: str, words: list[str]
) -> None:
    config = write_config(tmp_path, text)
    assert_one_line_error(serve("--config", str(config)), str(config), *words)


def test_a_missing_config_file_and_bad_flags_are_one_line_too(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    assert_one_line_error(serve("--config", str(missing)), str(missing))
    env = clean_env(FREIGHT_CONFIG=str(missing))
    assert_one_line_error(serve(env=env), str(missing))
    assert_one_line_error(serve("--port", "eighty"), "--port")
    assert_one_line_error(serve("--trusted-proxy", "10.0.0.0/99"), "10.0.0.0/99")
    assert_one_line_error(serve("--log-level", "chatty"), "--log-level")


def test_the_readme_example_config_is_accepted(tmp_path: Path) -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    options = readme.split("## Server options", 1)[1].split("\n## ", 1)[0]
    example = re.search(r"```toml\n(.*?)```", options, re.S)
    assert example, "the Server options section has no TOML example"
    config = write_config(tmp_path, example.group(1))
    settings = effective("--config", str(config))
    assert settings == {**settings, **tomllib.loads(example.group(1))}
