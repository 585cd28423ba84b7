"""Helpers for the CLI tests: run ``freight`` in a subprocess, make files, and two small
network actors on real loopback sockets: a proxy that can cut or black-hole a connection
after N bytes (a pulled cable, a hung link), and a tiny file server whose answers the test
controls (a file that changes, a lying digest, a hostile file name).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import re
import resource
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

MiB = 1024 * 1024
T = TypeVar("T")
FREIGHT = [sys.executable, "-m", "freight"]


def make_file(path: Path, size: int) -> str:
    """Write ``size`` random bytes in 1 MiB blocks; returns their SHA-256 (hex)."""
    digest = hashlib.sha256()
    with path.open("wb") as out:
        remaining = size
        while remaining:
            block = os.urandom(min(MiB, remaining))
            digest.update(block)
            out.write(block)
            remaining -= len(block)
    return digest.hexdigest()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as src:
        while block := src.read(MiB):
            digest.update(block)
    return digest.hexdigest()


def cli_env(state_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "FREIGHT_TOKEN"}
    return {**env, "FREIGHT_STATE_DIR": str(state_dir), "PYTHONUNBUFFERED": "1", **extra}


def run_cli(
    *args: str, env: dict[str, str], cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FREIGHT, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def start_cli(*args: str, env: dict[str, str], cwd: Path | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*FREIGHT, *args],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def peak_rss_of(*args: str, env: dict[str, str]) -> tuple[int, subprocess.CompletedProcess[str]]:
    """Run ``freight`` under a small wrapper that reports the child's peak RSS in bytes."""
    wrapper = (
        "import resource, subprocess, sys;"
        "r = subprocess.run(sys.argv[1:], capture_output=True, text=True);"
        "sys.stderr.write(r.stderr); sys.stdout.write(r.stdout);"
        "print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss);"
        "sys.exit(r.returncode)"
    )
    done = subprocess.run(
        [sys.executable, "-c", wrapper, *FREIGHT, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    match = re.search(r"PEAK_RSS_KB (\d+)", done.stdout)
    assert match, done
    stdout = done.stdout[: match.start()]
    assert resource.RUSAGE_CHILDREN  # Linux reports ru_maxrss in KiB
    return int(match.group(1)) * 1024, subprocess.CompletedProcess(
        done.args, done.returncode, stdout, done.stderr
    )


def stored_files(server_url: str) -> list[dict[str, Any]]:
    """The server's finished files (``/api/files``), as it lists them."""
    with urllib.request.urlopen(f"{server_url}/api/files?limit=1000", timeout=10) as resp:
        files = json.load(resp)["files"]
    assert isinstance(files, list)
    return files


def tus_metadata(server_url: str, file_id: str) -> dict[str, str]:
    """A finished upload's tus Upload-Metadata, decoded."""
    request = urllib.request.Request(
        f"{server_url}/files/{file_id}", method="HEAD", headers={"Tus-Resumable": "1.0.0"}
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        header = resp.headers.get("Upload-Metadata", "")
    decoded = {}
    for item in filter(None, (part.strip() for part in header.split(","))):
        key, _, value = item.partition(" ")
        decoded[key] = base64.b64decode(value).decode()
    return decoded


def json_output(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert isinstance(data, dict)
    return data


class LoopThread:
    """An asyncio loop in a daemon thread, for servers the (synchronous) tests drive."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(30)

    def call(self, function: Callable[[], None]) -> None:
        self.loop.call_soon_threadsafe(function)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


@dataclass
class _Rule:
    """What the proxy does to one direction once ``after`` bytes have passed."""

    cut_after: int | None = None  # forward that many bytes, then reset both sides (once)
    blackhole_after: int | None = None  # forward that many bytes, then swallow the rest
    freeze_after: int | None = None  # forward that many bytes, stop reading, reset later (once)
    freeze_seconds: float = 3.0


class ChaosProxy:
    """A TCP proxy to ``127.0.0.1:upstream_port`` that counts and can break traffic.

    Counters and rules are per direction (``up``: client to server, ``down``: back) and
    count every byte, headers included, across all connections since the last reset.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.counted = {"up": 0, "down": 0}
        self.rules = {"up": _Rule(), "down": _Rule()}
        self.connections = 0
        self._loops = LoopThread()
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ChaosProxy:
        async def listen() -> asyncio.Server:
            return await asyncio.start_server(self._handle, "127.0.0.1", 0)

        self._server = self._loops.run(listen())
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        if self._server is not None:
            server = self._server

            async def close() -> None:
                server.close()

            self._loops.run(close())
        self._loops.close()

    def reset(self, **rules: _Rule) -> None:
        """Zero the counters and set new rules (``up=_Rule(...)``); others pass through."""
        self.counted = {"up": 0, "down": 0}
        self.rules = {"up": rules.get("up", _Rule()), "down": rules.get("down", _Rule())}

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            client_w.transport.abort()
            return
        writers = (client_w, server_w)
        await asyncio.gather(
            self._pump(client_r, server_w, "up", writers),
            self._pump(server_r, client_w, "down", writers),
            return_exceptions=True,
        )
        for writer in writers:
            writer.transport.abort()

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        direction: str,
        writers: tuple[asyncio.StreamWriter, ...],
    ) -> None:
        # Once this connection has started swallowing it never forwards again, even after
        # reset(): resuming mid-stream would splice later bytes onto earlier ones, which no
        # real network does.
        swallowing = False
        try:
            while data := await reader.read(64 * 1024):
                if swallowing:
                    continue
                rule = self.rules[direction]
                if rule.freeze_after is not None and self.counted[direction] >= rule.freeze_after:
                    rule.freeze_after = None
                    await asyncio.sleep(rule.freeze_seconds)  # the sender's writes pile up
                    break
                done = self.counted[direction]
                limit = next(
                    (n for n in (rule.cut_after, rule.blackhole_after, rule.freeze_after) if n),
                    None,
                )
                if limit is not None and done + len(data) >= limit:
                    data = data[: max(0, limit - done)]
                    swallowing = rule.blackhole_after is not None and rule.cut_after is None
                if data:
                    writer.write(data)
                    await writer.drain()
                    self.counted[direction] += len(data)
                if rule.cut_after is not None and self.counted[direction] >= rule.cut_after:
                    rule.cut_after = None  # one cut per rule: the next attempt may pass
                    await asyncio.sleep(0.05)  # let the last bytes reach the server
                    break
        except OSError:
            pass
        for each in writers:
            each.transport.abort()


@dataclass
class FakeFile:
    """One file of :class:`FakeFileServer`; ``digest`` overrides the true SHA-256."""

    content: bytes
    etag: str
    name: str = "file.bin"
    digest: bytes | None = None
    honour_if_range: bool = True
    gets: list[dict[str, str]] = field(default_factory=list)


class FakeFileServer:
    """Serves ``/files/{id}`` like freight does (Range, If-Range, ETag, Repr-Digest,
    Content-Disposition), except that the test decides the answers."""

    def __init__(self) -> None:
        self.files: dict[str, FakeFile] = {}
        self._loops = LoopThread()
        self._runner: web.AppRunner | None = None
        self.port = 0

    def url(self, file_id: str) -> str:
        return f"http://127.0.0.1:{self.port}/files/{file_id}"

    def start(self) -> FakeFileServer:
        app = web.Application()
        app.router.add_get("/files/{id}", self._serve)  # and HEAD

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

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        item = self.files.get(request.match_info["id"])
        if item is None:
            return web.json_response(
                {"code": "ERR_UPLOAD_NOT_FOUND", "message": "no such file"}, status=404
            )
        item.gets.append(dict(request.headers))
        digest = item.digest or hashlib.sha256(item.content).digest()
        headers = {
            "ETag": item.etag,
            "Repr-Digest": f"sha-256=:{base64.b64encode(digest).decode()}:",
            "Content-Disposition": f'attachment; filename="{item.name}"',
            "Accept-Ranges": "bytes",
        }
        start = _range_start(request.headers.get("Range"))
        if_range = request.headers.get("If-Range")
        if start is not None and (not item.honour_if_range or if_range in (None, item.etag)):
            size = len(item.content)
            headers["Content-Range"] = f"bytes {start}-{size - 1}/{size}"
            return web.Response(status=206, body=item.content[start:], headers=headers)
        return web.Response(body=item.content, headers=headers)


def _range_start(value: str | None) -> int | None:
    match = re.fullmatch(r"bytes=(\d+)-", value or "")
    return int(match.group(1)) if match else None


def tcp_url(server: Any, timeout: float = 20) -> str:
    """``tcp://127.0.0.1:PORT`` of a server started with ``--tcp-port 0``, from its output."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in list(server.output_tail):
            if match := re.search(r"tcp://[\w.]+:(\d+)", line):
                return f"tcp://127.0.0.1:{match.group(1)}"
        time.sleep(0.02)
    raise AssertionError(f"no TCP address in the server's output: {list(server.output_tail)}")


def io_of(
    *args: str, env: dict[str, str], cwd: Path | None = None
) -> tuple[int, float, subprocess.CompletedProcess[str]]:
    """Run ``freight`` in a process that reports, as it exits, the bytes it read through
    read calls (``rchar``: files and sockets, page cache or not) and its CPU seconds."""
    probe = (
        "import atexit, os, sys\n"
        "def report():\n"
        "    io = dict(l.split(': ') for l in open('/proc/self/io').read().splitlines())\n"
        "    cpu = os.times()\n"
        "    sys.stderr.write(f\"\\nIO_PROBE {io['rchar']} {cpu.user + cpu.system}\\n\")\n"
        "atexit.register(report)\n"
        "sys.argv = ['freight', *sys.argv[1:]]\n"
        "from freight.cli.main import main\n"
        "main()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    match = re.search(r"IO_PROBE (\d+) ([\d.]+)", done.stderr)
    assert match, done
    stderr = done.stderr[: match.start()]
    completed = subprocess.CompletedProcess(done.args, done.returncode, done.stdout, stderr)
    return int(match.group(1)), float(match.group(2)), completed
