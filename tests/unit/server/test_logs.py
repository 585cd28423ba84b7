"""The log formatters: one line per record unless at debug, fields as ``key=value`` or JSON,
and nothing a client sends can start a line of its own."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from freight.server.logs import TrustedProxies, configure_logging, log_fields


class Captured:
    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self._capsys = capsys

    def getvalue(self) -> str:
        return self._capsys.readouterr().err


@pytest.fixture
def captured(capsys: pytest.CaptureFixture[str]) -> Iterator[Captured]:
    """stderr as the handler ``configure_logging`` installs writes it (pytest's capture)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield Captured(capsys)
    root.handlers[:] = handlers
    root.setLevel(level)


def fail() -> None:
    raise KeyError("missing\nkey")


def log_an_error() -> None:
    try:
        fail()
    except KeyError:
        logging.getLogger("freight.test").error("unhandled error on GET /x", exc_info=True)


def test_an_error_is_one_line_with_where_it_was_raised(captured: Captured) -> None:
    configure_logging("info", "text")
    log_an_error()
    output = captured.getvalue()
    assert output.count("\n") == 1 and "Traceback" not in output
    assert "ERROR freight.test: unhandled error on GET /x " in output
    assert "error=\"KeyError: 'missing\\\\nkey'\"" in output
    assert 'error_at="test_logs.py:' in output and ' in fail"' in output


def test_debug_adds_the_traceback(captured: Captured) -> None:
    configure_logging("debug", "text")
    log_an_error()
    output = captured.getvalue()
    assert "Traceback (most recent call last)" in output and output.count("\n") > 3


def test_json_is_one_object_per_line_even_with_a_traceback(captured: Captured) -> None:
    configure_logging("debug", "json")
    log_an_error()
    logging.getLogger("freight.test").info("done", extra=log_fields(upload_id="abc", size=3))
    first, second = (json.loads(line) for line in captured.getvalue().splitlines())
    assert first["level"] == "error" and first["error"].startswith("KeyError")
    assert "Traceback" in first["traceback"]
    assert second["upload_id"] == "abc" and second["size"] == 3
    assert second["time"].endswith("Z") and second["logger"] == "freight.test"


def test_a_message_or_field_cannot_forge_a_line(captured: Captured) -> None:
    configure_logging("info", "text")
    forged = "x\n2030-01-01T00:00:00Z INFO freight.access: request status=200"
    logging.getLogger("freight.test").warning("name %s", forged, extra=log_fields(path=forged))
    assert captured.getvalue().count("\n") == 1


def test_warning_level_hides_info(captured: Captured) -> None:
    configure_logging("warning", "text")
    logging.getLogger("freight.test").info("hidden")
    assert captured.getvalue() == ""
    with pytest.raises(ValueError, match="unknown log level"):
        configure_logging("chatty")


def test_trusted_proxies_match_networks_and_ipv4_mapped_peers() -> None:
    trusted = TrustedProxies(["10.0.0.0/8", "fd00::/8"])
    assert "10.1.2.3" in trusted and "::ffff:10.1.2.3" in trusted and "fd00::1" in trusted
    assert "11.0.0.1" not in trusted and "not an address" not in trusted
    assert not TrustedProxies() and "127.0.0.1" not in TrustedProxies()
