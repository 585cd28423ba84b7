"""Names and messages from a server are shown escaped: no terminal control, no rich markup.

A stand-in server (real aiohttp on loopback) answers with hostile names and error texts;
the CLI runs in a subprocess with rich forced to behave as on a colour terminal, so any
escape sequence or hyperlink it let through would show in its output.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web
from cli_support import LoopThread, cli_env, run_cli

HOSTILE = "\x1b]0;PWNED\x07\x1b[2J"
LINK = "[link=http://evil.example]click[/link]"
FORGED = "a\rb\nfake-row 1 GB"
NAMES = [f"{HOSTILE}title.bin", f"{LINK}.bin", FORGED, "\u202eevil.txt"]
BODY = b"hostile bytes"
STATIC = Path(__file__).parents[2] / "src" / "freight" / "server" / "static"


class HostileServer:
    def __init__(self) -> None:
        self._loops = LoopThread()
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> HostileServer:
        app = web.Application()
        app.router.add_get("/api/files", self._files)
        app.router.add_get("/files/ok", self._file)
        app.router.add_get("/files/{other}", self._refuse)

        async def listen() -> int:
            self._runner = web.AppRunner(app)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
            server = site._server
            assert isinstance(server, asyncio.Server)
            return int(server.sockets[0].getsockname()[1])

        self.port = self._loops.run(listen())
        return self

    def stop(self) -> None:
        if self._runner is not None:
            self._loops.run(self._runner.cleanup())
        self._loops.close()

    async def _files(self, request: web.Request) -> web.Response:
        files = [
            {"id": f"id{n}{HOSTILE}", "name": name, "size": 1, "sha256": LINK, "created": 0}
            for n, name in enumerate(NAMES)
        ]
        return web.json_response({"files": files})

    async def _file(self, request: web.Request) -> web.Response:
        digest = hashlib.sha256(BODY).digest()
        return web.Response(
            body=BODY,
            headers={
                "ETag": '"v1"',
                "Repr-Digest": f"sha-256=:{base64.b64encode(digest).decode()}:",
                "Content-Disposition": "attachment; filename*=UTF-8''%5Blink%3Dx%5Dy.bin",
            },
        )

    async def _refuse(self, request: web.Request) -> web.Response:
        message = f"no such file {HOSTILE}{LINK}\rforged line"
        return web.json_response({"code": "ERR_X", "message": message}, status=404)


@pytest.fixture
def hostile() -> Iterator[HostileServer]:
    server = HostileServer().start()
    yield server
    server.stop()


def _terminal_env(tmp_path: Path) -> dict[str, str]:
    # FORCE_COLOR makes rich treat the pipe as a terminal: styles, links, everything.
    return cli_env(tmp_path / "state", FORCE_COLOR="1", COLUMNS="200", TERM="xterm-256color")


def _assert_inert(output: str) -> None:
    # Colour, erasing the line, moving up and hiding the cursor are rich's progress bar;
    # any other escape (a title, a cleared screen), BEL, CR or hyperlink is not.
    without_colour = re.sub(r"\x1b\[(?:[0-9;]*m|2K|[0-9]*A|\?25[lh])", "", output)
    assert "\x1b" not in without_colour, repr(output)
    assert "\x07" not in output and "\r" not in output
    assert "\x1b]8;" not in output  # no OSC 8 hyperlink


def test_visible_escapes_control_and_bidi_characters() -> None:
    from freight.cli.render import visible

    assert visible(HOSTILE) == "\\x1b]0;PWNED\\x07\\x1b[2J"
    assert visible("a\rb\n") == "a\\x0db\\x0a"
    assert visible("\u202eabc\u2066") == "\\u202eabc\\u2066"
    assert visible("plain café [x]") == "plain café [x]"


def test_ls_prints_names_escaped_and_literal(hostile: HostileServer, tmp_path: Path) -> None:
    done = run_cli("ls", hostile.url, env=_terminal_env(tmp_path))
    assert done.returncode == 0, done.stderr
    _assert_inert(done.stdout)
    plain = re.sub(r"\x1b\[[0-9;]*m", "", done.stdout)
    assert "\\x1b]0;PWNED\\x07" in plain
    assert LINK in plain.replace("\n", "") or "[link=http://evil.example]" in plain
    assert "\\u202eevil.txt" in plain
    # The CR/LF name is one row: no line starts with the forged text.
    assert not any(line.startswith("fake-row") for line in plain.splitlines())


def test_server_error_text_is_escaped(hostile: HostileServer, tmp_path: Path) -> None:
    done = run_cli(
        "get",
        f"{hostile.url}/files/nope",
        "-o",
        str(tmp_path / "out.bin"),  # straight to GET: its error has a body
        "--retries",
        "0",
        env=_terminal_env(tmp_path),
    )
    assert done.returncode == 1
    _assert_inert(done.stderr)
    plain = re.sub(r"\x1b\[[0-9;]*m", "", done.stderr)
    assert "\\x1b]0;PWNED" in plain and "[link=http://evil.example]click[/link]" in plain
    (line,) = [line for line in plain.splitlines() if "Error:" in line]
    assert line.endswith("forged line (HTTP 404)")


def test_get_result_line_shows_markup_literally(hostile: HostileServer, tmp_path: Path) -> None:
    done = run_cli("get", f"{hostile.url}/files/ok", env=_terminal_env(tmp_path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    _assert_inert(done.stdout + done.stderr)
    assert "[link=x]y.bin" in re.sub(r"\x1b\[[0-9;]*m", "", done.stdout)
    assert (tmp_path / "[link=x]y.bin").read_bytes() == BODY


def test_page_scripts_never_parse_html_from_data() -> None:
    # The browser page renders every name with text nodes (h() / textContent).
    for script in STATIC.glob("*.js"):
        source = script.read_text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write"):
            assert sink not in source, f"{script.name} uses {sink}"
