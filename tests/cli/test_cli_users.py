"""``freight user``: add, list, token, rm on a data directory and on PostgreSQL (``--db``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from freight.cli.main import cli
from freight.cli.users import parse_duration, parse_size
from freight.core.users import parse_token


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["user", *args])
    return result.exit_code, result.output


def test_add_list_token_and_remove(tmp_path: Path) -> None:
    where = ("--data-dir", str(tmp_path / "data"))
    assert run("add", "alice", "--quota", "2G", "--max-files", "5", *where)[0] == 0
    assert run("add", "root", "--admin", *where)[0] == 0
    code, token = run("token", "alice", "--read-only", "--expires", "1d", *where)
    assert code == 0 and parse_token(token.strip()) is not None
    code, listed = run("list", *where)
    assert code == 0
    assert listed.splitlines() == [
        "alice: 0 bytes of 2.0 GiB, 0 of 5 files, 1 tokens",
        "root (admin): 0 bytes, 0 files, 0 tokens",
    ]
    code, text = run("list", "--json", *where)
    users = json.loads(text)["users"]
    assert users[0]["quota"] == {"bytes": 2 * 2**30, "files": 5}
    code, tokens = run("token", "alice", "--list", *where)
    assert "read-only" in tokens and "expires 20" in tokens
    assert run("rm", "alice", *where)[0] == 0
    assert "alice" not in run("list", *where)[1]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("add", "Bad Name"), "is not a user name"),
        (("add", "dup"), "already exists"),
        (("token", "nobody"), "no user named 'nobody'"),
        (("token", "dup", "--revoke", "0123456789abcdef"), "has no token"),
        (("rm", "nobody"), "no user named"),
        (("add", "x", "--quota", "lots"), "is not a size"),
        (("token", "dup", "--expires", "soon"), "is not a duration"),
    ],
)
def test_mistakes_are_one_line_and_exit_nonzero(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    where = ("--data-dir", str(tmp_path / "data"))
    assert run("add", "dup", *where)[0] == 0
    code, output = run(*args, *where)
    assert code != 0 and message in output


def test_units() -> None:
    assert parse_size("500G") == 500 * 2**30
    assert parse_size("64GiB") == 64 * 2**30
    assert parse_size("1.5m") == 1_572_864
    assert parse_duration("90m") == 5400
    for bad in ("", "-1G", "1X"):
        with pytest.raises(ValueError):
            parse_size(bad)


def test_the_same_commands_on_a_fleets_database(pg_dsn: str) -> None:
    assert run("add", "alice", "--quota", "1G", "--db", pg_dsn)[0] == 0
    code, token = run("token", "alice", "--db", pg_dsn)
    parsed = parse_token(token.strip())
    assert code == 0 and parsed is not None
    assert run("list", "--db", pg_dsn)[1].splitlines() == [
        "alice: 0 bytes of 1.0 GiB, 0 files, 1 tokens"
    ]
    assert run("token", "alice", "--list", "--db", pg_dsn)[1].startswith(parsed[0])
